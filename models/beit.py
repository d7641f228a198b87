"""BEiT-base frame features (timm): the [CLS] token or the mean of the patch tokens, 768-d.

Weights: <weights-dir>/beit-base.safetensors (or .bin/.pth), else timm downloads
beit_base_patch16_224.in22k_ft_in22k_in1k from the Hugging Face hub when online."""

from __future__ import annotations

import numpy as np
import torch

from .base import FrameEmbedder
from .device import configure_cpu_threads, resolve_device
from .preprocess import batch_tensor
from .weights import find_local, missing, offline

TIMM_NAME = "beit_base_patch16_224.in22k_ft_in22k_in1k"
LOCAL_NAMES = ("beit-base.safetensors", "beit-base.bin", "beit-base.pth")


class BeitEmbedder(FrameEmbedder):
    dim = 768

    def __init__(self, pooling: str = "cls", device: str = "auto", weights_dir: str | None = None,
                 random_weights: bool = False):
        super().__init__(device)
        configure_cpu_threads()
        import timm

        if pooling not in ("cls", "mean"):
            raise ValueError("pooling is cls or mean")
        self.pooling = pooling
        self.name = f"beit-{pooling}"
        self.device = resolve_device(device)
        local = next((p for p in (find_local(n, weights_dir) for n in LOCAL_NAMES) if p is not None), None)
        try:
            if random_weights:
                model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0)
            elif local is not None:
                model = timm.create_model(TIMM_NAME, pretrained=True, num_classes=0,
                                          pretrained_cfg_overlay={"file": str(local)})
            elif offline():
                raise missing(self.name, "no local file and downloads are off", LOCAL_NAMES[0],
                              "unset CASTFINDER_OFFLINE to let timm download them")
            else:
                model = timm.create_model(TIMM_NAME, pretrained=True, num_classes=0)
        except Exception as exc:
            if type(exc).__name__ == "MissingWeightsError":
                raise
            raise missing(self.name, f"loading failed ({type(exc).__name__})", LOCAL_NAMES[0],
                          f"timm downloads {TIMM_NAME} from the Hugging Face hub") from None
        cfg = model.pretrained_cfg
        self.mean, self.std = cfg.get("mean", (0.5,) * 3), cfg.get("std", (0.5,) * 3)
        self.model = model.eval().to(self.device)

    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        x = batch_tensor(images, 224, self.mean, self.std, self.device, center_crop=True)
        tokens = self.model.forward_features(x)  # (n, 1 + patches, 768), final norm applied
        pooled = tokens[:, 0] if self.pooling == "cls" else tokens[:, 1:].mean(dim=1)
        return pooled.float().cpu().numpy()
