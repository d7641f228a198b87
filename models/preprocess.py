"""Shared image preprocessing for the torch embedders."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import Face

# ArcFace's canonical 5-point positions in a 112x112 crop (eyes, nose, mouth corners)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def batch_tensor(images: list[np.ndarray], size: int, mean, std, device, center_crop: bool = False,
                 memory_format=torch.contiguous_format) -> torch.Tensor:
    """RGB uint8 images → normalised NCHW float tensor of size x size."""
    out = []
    for im in images:
        if center_crop:  # CLIP/BEiT style: short side to `size`, then the centre
            h, w = im.shape[:2]
            s = size / min(h, w)
            im = cv2.resize(im, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_AREA)
            h, w = im.shape[:2]
            y, x = (h - size) // 2, (w - size) // 2
            im = im[y:y + size, x:x + size]
        else:
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
        out.append(im)
    x = torch.from_numpy(np.stack(out)).to(device).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=memory_format)


def align_arcface(image: np.ndarray, face: Face, size: int = 112) -> np.ndarray:
    """Similarity transform of the 5 landmarks onto the ArcFace template."""
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), dst, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: fall back to the box
        return crop_box(image, face, size, margin=0.0)
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0)


def crop_box(image: np.ndarray, face: Face, size: int, margin: float = 0.1) -> np.ndarray:
    """The face box grown by `margin` of its size on each side, resized square (FaceNet style)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = face.box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    x1, y1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
    x2, y2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
    if x2 <= x1 or y2 <= y1:
        return np.zeros((size, size, 3), np.uint8)
    return cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
