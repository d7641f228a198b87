"""Near-duplicate frames: the report's method 1 (consecutive similarity, online, before any
model runs) and method 2 (DBSCAN over a shot's face vectors, when the shot closes)."""

from __future__ import annotations

import cv2
import numpy as np

THUMB = (32, 18)  # width, height of the grey thumbnail compared between frames


def thumbnail(small_bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 - mean absolute difference of grey thumbnails: 1.0 for identical frames."""
    return 1.0 - float(np.abs(a - b).mean())


class ConsecutiveDeduplicator:
    """Drops a sampled frame too similar to the last kept frame of the same shot.
    The first frame of a shot is always kept, so no shot loses all its frames, and a shot keeps at
    least one frame every `max_gap_s`: the 32x18 thumbnail cannot see a 15-px face, so a still wide
    shot (an interview, a blurred backdrop) would otherwise give its faces one look in 20 seconds."""

    def __init__(self, threshold: float = 0.985, enabled: bool = True, max_gap_s: float = 0.0):
        self.threshold = threshold
        self.enabled = enabled
        self.max_gap_s = max_gap_s
        self.shot = None
        self.last_kept: np.ndarray | None = None
        self.last_kept_s = 0.0
        self.dropped = 0

    def keep(self, shot: int, small_bgr: np.ndarray, time_s: float | None = None) -> bool:
        if not self.enabled:
            return True
        thumb = thumbnail(small_bgr)
        if shot != self.shot or self.last_kept is None:
            self.shot, self.last_kept, self.last_kept_s = shot, thumb, time_s or 0.0
            return True
        overdue = (self.max_gap_s > 0 and time_s is not None
                   and time_s - self.last_kept_s >= self.max_gap_s - 1e-6)
        if not overdue and similarity(thumb, self.last_kept) >= self.threshold:
            self.dropped += 1
            return False
        self.last_kept, self.last_kept_s = thumb, time_s or 0.0
        return True


def dbscan_keep(face_vectors: np.ndarray, qualities: np.ndarray, eps: float = 0.25) -> np.ndarray:
    """Method 2: cluster one shot's face vectors (cosine distance) and keep the best-quality face
    of each cluster. Returns the indices kept. Noise points are their own cluster."""
    n = len(face_vectors)
    if n <= 1:
        return np.arange(n)
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=1, metric="cosine").fit_predict(face_vectors)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.append(members[np.argmax(qualities[members])])
    return np.sort(np.array(keep))
