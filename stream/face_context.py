"""What surrounds a face: the colours of the hair, head and upper body around it (a 2x2 grid of HSV
histograms). Within one video a person keeps their clothes and hair through a scene, which a
face embedder cannot see on a 20-px or crushed face; search uses it to re-rank face hits by how
much they look like the video's best hit (index/search.py)."""

from __future__ import annotations

import cv2
import numpy as np

BINS = (8, 4, 4)                 # hue, saturation, value
CELL_DIM = BINS[0] * BINS[1] * BINS[2]
DIM = 4 * CELL_DIM               # 2x2 cells
MIN_CELL_PX = 4                  # a cell with fewer pixels (the frame's edge) stays zero


def context_region(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Head, hair and upper body: 1.5 face widths each side of the face's centre, from half a face
    above it to 2.5 faces below it, clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    return (int(max(0, cx - 1.5 * w)), int(max(0, y1 - 0.5 * h)),
            int(min(width, cx + 1.5 * w)), int(min(height, y2 + 2.5 * h)))


def _cell_histogram(hsv: np.ndarray) -> np.ndarray:
    if hsv.shape[0] * hsv.shape[1] < MIN_CELL_PX:
        return np.zeros(CELL_DIM, np.float32)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(BINS), [0, 180, 0, 256, 0, 256]).ravel()
    hist = np.sqrt(hist / max(1.0, float(hist.sum())))  # Hellinger: the dot product of two is their Bhattacharyya
    return hist / max(1e-9, float(np.linalg.norm(hist)))


def context_descriptor(image: np.ndarray, box) -> np.ndarray:
    """(DIM,) float32 for the face `box` of an RGB uint8 image; the dot product of two descriptors is in
    0..1 (1: the same colours in the same places)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = context_region(box, w, h)
    out = np.zeros(DIM, np.float32)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return out
    hsv = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2HSV)
    rh, rw = hsv.shape[:2]
    cells = (hsv[:rh // 2, :rw // 2], hsv[:rh // 2, rw // 2:], hsv[rh // 2:, :rw // 2], hsv[rh // 2:, rw // 2:])
    for i, cell in enumerate(cells):
        out[i * CELL_DIM:(i + 1) * CELL_DIM] = _cell_histogram(cell)
    return out / 2.0  # four unit cells -> a unit vector


def to_blob(descriptor: np.ndarray | None) -> bytes | None:
    return None if descriptor is None else descriptor.astype(np.float16).tobytes()


def from_blob(blob: bytes | None) -> np.ndarray | None:
    if blob is None or len(blob) != DIM * 2:
        return None
    return np.frombuffer(blob, np.float16).astype(np.float32)
