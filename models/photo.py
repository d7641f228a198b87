"""Query photos: decode safely (clear errors for unreadable files), bound their size, pick a face."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from castfinder.core.errors import InputError

from .base import Face, FaceDetector

MAX_SIDE = 1280          # larger photos are scaled down: detection does not need more
MAX_PIXELS = 80_000_000  # refuse decompression bombs before decoding


def load_photo(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"{label}: empty file")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise InputError(f"{label}: empty file")
        stream = path.open("rb")
    try:
        with Image.open(stream) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{label}: image too large ({im.width}x{im.height})")
            im = ImageOps.exif_transpose(im).convert("RGB")
            if max(im.size) > MAX_SIDE:
                im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            return np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label}: not a readable image ({type(exc).__name__})") from None


def largest_face(detector: FaceDetector, image: np.ndarray, **detect) -> tuple[Face | None, int]:
    """The largest face of a photo and how many faces were found (`detect`: options for the detector)."""
    faces = detector.detect([image], **detect)[0]
    if not faces:
        return None, 0
    return max(faces, key=lambda f: f.size), len(faces)


# A query photo is chosen by a person: it almost surely shows the face, so when the usual pass finds
# none, a second pass looks harder. A crop cut tight around the face loses the forehead and chin the
# detector's windows expect (and the context dlib's chip keeps), so the photo is padded; a small one
# is enlarged; and the cascade's thresholds are lowered.
LENIENT_THRESHOLDS = (0.5, 0.6, 0.6)
LENIENT_MIN_PROB = 0.8
PAD = 0.35                # of the photo's size, on each side
MIN_SIDE = 224            # smaller photos are enlarged to this (after padding)


def lenient_view(image: np.ndarray) -> np.ndarray:
    """The photo padded by replicating its border, then enlarged when small."""
    import cv2
    h, w = image.shape[:2]
    py, px = int(round(h * PAD)), int(round(w * PAD))
    out = cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_REPLICATE)
    scale = MIN_SIDE / min(out.shape[:2])
    if scale > 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(out)


def photo_face(detector: FaceDetector, image: np.ndarray, lenient: bool = True) -> tuple[np.ndarray, Face | None, int, str]:
    """(image the face is in, its largest face or None, faces found, how it was found). The face's box
    refers to the returned image, which is the padded, enlarged view when the second pass found it."""
    face, n = largest_face(detector, image)
    if face is not None:
        return image, face, n, "face" if n == 1 else f"{n} faces, used the largest"
    if not lenient:
        return image, None, 0, "no face found"
    view = lenient_view(image)
    face, n = largest_face(detector, view, thresholds=LENIENT_THRESHOLDS, min_prob=LENIENT_MIN_PROB)
    if face is None:
        return image, None, 0, "no face found"
    return view, face, n, "face found on a second, lenient look (padded, enlarged, lower thresholds)"
