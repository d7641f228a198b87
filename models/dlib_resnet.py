"""dlib's ResNet 128-d face descriptor: the offline default face embedder.

Weights come from the face-recognition-models wheel; dlib-bin aligns each face with its own
5-point shape predictor run inside the MTCNN box and cuts the 150x150 chip. The network itself
runs in PyTorch (models.dlib_torch), giving the same vectors as dlib 25x faster on CPU."""

from __future__ import annotations

import numpy as np
import torch

from .base import Face, FaceEmbedder, l2_normalise
from .device import configure_cpu_threads, resolve_device
from .dlib_torch import CHIP_SIZE, DlibResNet, parse_dlib_resnet
from .weights import MissingWeightsError, package_dir

CHIP_PADDING = 0.25  # dlib's default context around the face, as in compute_face_descriptor


class DlibResnetEmbedder(FaceEmbedder):
    name = "dlib-resnet"
    dim = 128

    def __init__(self, device: str = "auto", weights_dir: str | None = None, flip: bool = False):
        super().__init__(device)
        self.flip = flip  # average each face with its mirror image: a pose or lighting quirk counts half
        configure_cpu_threads()
        try:
            import dlib
        except ImportError:
            raise MissingWeightsError("dlib is not installed (pip install dlib-bin)") from None
        models = package_dir("face_recognition_models") / "models"
        predictor = models / "shape_predictor_5_face_landmarks.dat"
        resnet = models / "dlib_face_recognition_resnet_model_v1.dat"
        for path in (predictor, resnet):
            if not path.is_file():
                raise MissingWeightsError(f"dlib model file missing: {path} (pip install face-recognition-models)")
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(predictor))
        self.device = resolve_device(device)
        self.net = DlibResNet(parse_dlib_resnet(resnet)).eval().to(self.device)

    def chips(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """Aligned 150x150 RGB chips, one per face."""
        if not faces:
            return []
        image = np.ascontiguousarray(image)
        shapes = self._dlib.full_object_detections()
        for face in faces:
            x1, y1, x2, y2 = (int(round(v)) for v in face.box)
            shapes.append(self.predictor(image, self._dlib.rectangle(x1, y1, x2, y2)))
        return [np.asarray(c) for c in self._dlib.get_face_chips(image, shapes, CHIP_SIZE, CHIP_PADDING)]

    @torch.inference_mode()
    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for i in range(0, len(chips), self.batch_size):
            batch = torch.from_numpy(np.stack(chips[i:i + self.batch_size])).to(self.device)
            if self.flip:  # both views in one forward pass; the sum of their unit vectors
                n = len(batch)
                both = l2_normalise(self.net(torch.cat([batch, batch.flip(2)])).float().cpu().numpy())
                out.append(both[:n] + both[n:])
            else:
                out.append(self.net(batch).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        return self.embed_chips(self.chips(image, faces))

    def embed_batch(self, items: list[tuple[np.ndarray, list[Face]]]) -> list[np.ndarray]:
        # all chips of the batch go through the network together
        chips, counts = [], []
        for image, faces in items:
            c = self.chips(image, faces)
            chips.extend(c)
            counts.append(len(c))
        vectors = self.embed_chips(chips)
        return list(np.split(vectors, np.cumsum(counts)[:-1])) if counts else []
