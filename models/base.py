"""The small interfaces every detector and embedder implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Face:
    box: np.ndarray         # x1, y1, x2, y2 in image pixels
    landmarks: np.ndarray   # 5 x 2: left eye, right eye, nose, left mouth corner, right mouth corner
    prob: float
    sharpness: float | None = None  # variance of the Laplacian of the grey face crop (face quality)
    context: np.ndarray | None = None  # colours of hair and upper body around it (stream/face_context.py)

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceDetector(ABC):
    name: str

    @abstractmethod
    def detect(self, images: list[np.ndarray], fine: list | None = None, thresholds: tuple | None = None,
               min_prob: float | None = None) -> list[list[Face]]:
        """One list of faces per RGB uint8 image; images of one batch share a size. fine[i]: True: also
        look for the small faces the detector skips by default in image i; "probe": a cheaper look for
        them, enough to tell whether an image shows any; thresholds / min_prob: stricter or more lenient
        than the detector's own, for this call only."""


class Embedder(ABC):
    """Maps inputs to L2-normalised float32 vectors so that inner product = cosine."""

    name: str
    dim: int
    kind: str               # "face" or "frame"
    batch_size: int = 32

    def __init__(self, device: str = "auto"):
        self.device_name = device


class FrameEmbedder(Embedder):
    kind = "frame"

    def embed_frames(self, images: list[np.ndarray]) -> np.ndarray:
        """(n, dim) L2-normalised vectors for RGB uint8 images, run in batches of batch_size."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        import torch

        with torch.inference_mode():
            out = [self._forward(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return l2_normalise(np.concatenate(out))

    @abstractmethod
    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        """Raw features of one batch (at most batch_size images)."""


class FaceEmbedder(Embedder):
    kind = "face"

    @abstractmethod
    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """(len(faces), dim) vectors for the faces of one RGB image."""

    def embed_batch(self, items: list[tuple[np.ndarray, list[Face]]]) -> list[np.ndarray]:
        """Faces of several images; models that batch across images override this."""
        return [self.embed_faces(image, faces) for image, faces in items]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
