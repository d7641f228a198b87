"""Dark frames: how bright a frame is, and the contrast-equalised copy the face detector gets a second
look at when a dark frame showed it no face (ingest.dark_look_luma). Only the detector sees the copy;
faces are embedded from the frame's own pixels (dlib's vectors barely move when a face is darkened: it
is the detector the dark defeats)."""

from __future__ import annotations

import cv2
import numpy as np


def mean_luma(image: np.ndarray) -> float:
    """Mean brightness of an RGB uint8 image, 0-1 (every 4th pixel each way: enough for a mean)."""
    x = image[::4, ::4].astype(np.float32)
    return float((0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).mean() / 255.0)


def equalised(image: np.ndarray) -> np.ndarray:
    """Local contrast equalisation (CLAHE on the L of Lab, 8x8 tiles): a face lit by a dim lamp in a dark
    scene stands out as it would in daylight."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
