"""FaceNet (InceptionResnetV1 trained on VGGFace2, facenet-pytorch), 512-d.

Weights: <weights-dir>/facenet-vggface2.pt (a state dict), else facenet-pytorch's own download
into the torch hub cache when online."""

from __future__ import annotations

import numpy as np
import torch

from .base import Face, FaceEmbedder, l2_normalise
from .device import configure_cpu_threads, resolve_device
from .preprocess import crop_box
from .weights import find_local, missing, offline

WEIGHTS_FILE = "facenet-vggface2.pt"


class FacenetEmbedder(FaceEmbedder):
    name = "facenet-vggface2"
    dim = 512

    def __init__(self, device: str = "auto", weights_dir: str | None = None, random_weights: bool = False):
        super().__init__(device)
        configure_cpu_threads()
        from facenet_pytorch import InceptionResnetV1

        self.device = resolve_device(device)
        local = find_local(WEIGHTS_FILE, weights_dir)
        if random_weights:
            model = InceptionResnetV1(pretrained=None, classify=False)
        elif local is not None:
            model = InceptionResnetV1(pretrained=None, classify=False)
            state = torch.load(local, map_location="cpu", weights_only=True)
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")}, strict=False)
        else:
            if offline():
                raise missing(self.name, "no local file and downloads are off", WEIGHTS_FILE,
                              "unset CASTFINDER_OFFLINE to let facenet-pytorch download them")
            try:
                model = InceptionResnetV1(pretrained="vggface2", classify=False)
            except Exception as exc:  # network errors of every kind
                raise missing(self.name, f"download failed ({type(exc).__name__})", WEIGHTS_FILE,
                              "facenet-pytorch downloads them from its GitHub release") from None
        self.model = model.eval().to(self.device)

    @torch.inference_mode()
    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        crops = np.stack([crop_box(image, f, 160, margin=0.1) for f in faces])
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - 127.5) / 128.0  # facenet-pytorch's fixed_image_standardization
        return l2_normalise(self.model(x).float().cpu().numpy())
