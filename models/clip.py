"""CLIP image features (open_clip): ViT-B/32 and RN101, OpenAI weights.

Weights: <weights-dir>/clip-vit-b32.pt or clip-rn101.pt (open_clip checkpoints), else open_clip
downloads them from the Hugging Face hub when online."""

from __future__ import annotations

import numpy as np
import torch

from .base import FrameEmbedder
from .device import configure_cpu_threads, resolve_device
from .preprocess import batch_tensor
from .weights import find_local, missing, offline

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ARCHS = {"clip-vit-b32": ("ViT-B-32", 512), "clip-rn101": ("RN101", 512)}


class ClipEmbedder(FrameEmbedder):
    def __init__(self, name: str = "clip-vit-b32", device: str = "auto", weights_dir: str | None = None,
                 random_weights: bool = False):
        super().__init__(device)
        configure_cpu_threads()
        import open_clip

        self.name = name
        arch, self.dim = ARCHS[name]
        self.device = resolve_device(device)
        local = find_local(f"{name}.pt", weights_dir)
        if random_weights:
            pretrained = None
        elif local is not None:
            pretrained = str(local)
        elif offline():
            raise missing(name, "no local file and downloads are off", f"{name}.pt",
                          "unset CASTFINDER_OFFLINE to let open_clip download them")
        else:
            pretrained = "openai"
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, device=self.device)
        except Exception as exc:
            raise missing(name, f"loading failed ({type(exc).__name__}: {str(exc)[:120]})", f"{name}.pt",
                          "open_clip downloads the OpenAI weights from the Hugging Face hub") from None
        self.model = model.eval()
        self.size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size

    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        x = batch_tensor(images, self.size, CLIP_MEAN, CLIP_STD, self.device, center_crop=True)
        return self.model.encode_image(x).float().cpu().numpy()
