"""Face quality without a learned model (the paper's SDD-FIQA weights are not available here):
detector confidence x size x frontality (from the 5 landmarks) x sharpness."""

from __future__ import annotations

import cv2
import numpy as np


def face_sharpness(image: np.ndarray, box) -> float:
    """Variance of the Laplacian of the face, greyed and scaled to 64 px (blur → low)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def frontality(landmarks) -> float:
    """1 when the nose sits between the eyes (frontal), 0 when it reaches an eye (profile)."""
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    left, right, nose = lm[0], lm[1], lm[2]
    half = max(1.0, float(np.linalg.norm(right - left)) / 2)
    return float(np.clip(1.0 - abs(nose[0] - (left[0] + right[0]) / 2) / half, 0.0, 1.0))


def face_quality(prob: float, box, landmarks, sharpness: float | None) -> float:
    """0..1. No factor alone zeroes a face: a sharp, confident profile still beats a blurred smudge."""
    size = min(box[2] - box[0], box[3] - box[1])
    s_size = float(np.clip(size / 80.0, 0.0, 1.0))
    s_sharp = 1.0 if sharpness is None else float(np.clip(sharpness / 150.0, 0.0, 1.0))
    return float(prob * (0.4 + 0.6 * s_size) * (0.3 + 0.7 * frontality(landmarks)) * (0.5 + 0.5 * s_sharp))
