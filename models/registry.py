"""Embedder names → constructors. Offline defaults first; the others need their weights
(downloaded when online, or a --weights-dir) and say so clearly when they are missing."""

from __future__ import annotations

from castfinder.core.config import FACE_EMBEDDER_NAMES, FRAME_EMBEDDER_NAMES
from castfinder.core.errors import InputError

from .base import FaceEmbedder, FrameEmbedder


def _dlib(**kw):
    from .dlib_resnet import DlibResnetEmbedder
    return DlibResnetEmbedder(**kw)


def _facenet(**kw):
    from .facenet import FacenetEmbedder
    return FacenetEmbedder(**kw)


def _arcface(**kw):
    from .arcface import ArcFaceEmbedder
    return ArcFaceEmbedder(**kw)


def _effnet(**kw):
    from .effnet import EffNetLite0Embedder
    return EffNetLite0Embedder(**kw)


def _clip(name):
    def make(**kw):
        from .clip import ClipEmbedder
        return ClipEmbedder(name, **kw)
    return make


def _beit(pooling):
    def make(**kw):
        from .beit import BeitEmbedder
        return BeitEmbedder(pooling, **kw)
    return make


FACE_EMBEDDERS = {"dlib-resnet": _dlib, "facenet-vggface2": _facenet, "arcface": _arcface}
FRAME_EMBEDDERS = {"effnet-lite0": _effnet, "clip-vit-b32": _clip("clip-vit-b32"), "clip-rn101": _clip("clip-rn101"),
                   "beit-cls": _beit("cls"), "beit-mean": _beit("mean")}


FLIP_AVERAGING = {"dlib-resnet"}  # embedders that can average a face with its mirror image


# the settings layer validates presets against these names without importing this module
assert tuple(FACE_EMBEDDERS) == FACE_EMBEDDER_NAMES and tuple(FRAME_EMBEDDERS) == FRAME_EMBEDDER_NAMES, \
    "castfinder.core.config's embedder names are out of step with the registry"


def make_face_embedder(name: str, flip: bool = False, **kw) -> FaceEmbedder:
    if name not in FACE_EMBEDDERS:
        raise InputError(f"unknown face embedder '{name}' (known: {', '.join(FACE_EMBEDDERS)})")
    if flip and name in FLIP_AVERAGING:
        kw["flip"] = True
    return FACE_EMBEDDERS[name](**kw)


def make_frame_embedder(name: str, **kw) -> FrameEmbedder:
    if name not in FRAME_EMBEDDERS:
        raise InputError(f"unknown frame embedder '{name}' (known: {', '.join(FRAME_EMBEDDERS)})")
    return FRAME_EMBEDDERS[name](**kw)
