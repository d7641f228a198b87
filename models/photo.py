"""Query photos: decode safely (clear errors for unreadable files), bound their size, pick a face."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from castfinder.errors import InputError

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


def largest_face(detector: FaceDetector, image: np.ndarray) -> tuple[Face | None, int]:
    """The largest face of a photo and how many faces were found."""
    faces = detector.detect([image])[0]
    if not faces:
        return None, 0
    return max(faces, key=lambda f: f.size), len(faces)
