"""ArcFace (insightface buffalo_l recognition model, w600k_r50.onnx) through onnxruntime, 512-d.

Weights: <weights-dir>/buffalo_l/w600k_r50.onnx, or ~/.insightface/models/buffalo_l/ (where
insightface keeps them), else the buffalo_l pack is downloaded when online. Runs on the CUDA
execution provider when onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

import os
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from .base import Face, FaceEmbedder, l2_normalise
from .preprocess import align_arcface
from .weights import find_local, missing, offline

RELATIVE = "buffalo_l/w600k_r50.onnx"
PACK_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
INSIGHTFACE_HOME = Path(os.environ.get("INSIGHTFACE_HOME", "~/.insightface")).expanduser() / "models"


def _download(target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    archive = target_dir / "buffalo_l.zip"
    urllib.request.urlretrieve(PACK_URL, archive)
    with zipfile.ZipFile(archive) as z:
        z.extractall(target_dir / "buffalo_l")
    archive.unlink()
    return target_dir / RELATIVE


class ArcFaceEmbedder(FaceEmbedder):
    name = "arcface"
    dim = 512

    def __init__(self, device: str = "auto", weights_dir: str | None = None, model_path: str | None = None):
        super().__init__(device)
        import onnxruntime as ort

        path = Path(model_path) if model_path else (find_local(RELATIVE, weights_dir) or
                                                    (INSIGHTFACE_HOME / RELATIVE if (INSIGHTFACE_HOME / RELATIVE).exists() else None))
        if path is None:
            if offline():
                raise missing(self.name, "no local file and downloads are off", RELATIVE,
                              "unset CASTFINDER_OFFLINE to download insightface's buffalo_l pack")
            try:
                path = _download(INSIGHTFACE_HOME)
            except Exception as exc:
                raise missing(self.name, f"download failed ({type(exc).__name__})", RELATIVE,
                              f"the pack comes from {PACK_URL}") from None
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, (os.cpu_count() or 2) // 2)
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 112
        self.dim = int(self.session.get_outputs()[0].shape[1])

    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        crops = np.stack([align_arcface(image, f, self.size) for f in faces]).astype(np.float32)
        x = ((crops - 127.5) / 127.5).transpose(0, 3, 1, 2)  # RGB, as insightface feeds it
        return l2_normalise(self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0])
