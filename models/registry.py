"""Embedder names → constructors. Only models with real loading code are listed."""

from __future__ import annotations

from castfinder.errors import InputError

from .base import FaceEmbedder, FrameEmbedder


def _dlib(**kw):
    from .dlib_resnet import DlibResnetEmbedder
    return DlibResnetEmbedder(**kw)


def _effnet(**kw):
    from .effnet import EffNetLite0Embedder
    return EffNetLite0Embedder(**kw)


FACE_EMBEDDERS = {"dlib-resnet": _dlib}
FRAME_EMBEDDERS = {"effnet-lite0": _effnet}


def make_face_embedder(name: str, **kw) -> FaceEmbedder:
    if name not in FACE_EMBEDDERS:
        raise InputError(f"unknown face embedder '{name}' (available: {', '.join(FACE_EMBEDDERS)})")
    return FACE_EMBEDDERS[name](**kw)


def make_frame_embedder(name: str, **kw) -> FrameEmbedder:
    if name not in FRAME_EMBEDDERS:
        raise InputError(f"unknown frame embedder '{name}' (available: {', '.join(FRAME_EMBEDDERS)})")
    return FRAME_EMBEDDERS[name](**kw)
