"""Settings for ingest and query, loaded from a YAML preset in configs/ plus overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class IngestConfig:
    analysis_width: int = 640          # frames are scaled to this width in the decoder
    sample_fps: float = 5.0            # frames per second kept inside each shot (the report's 5)
    shot_detector: str = "content"     # content | adaptive
    shot_threshold: float = 20.0       # ContentDetector threshold (adaptive: adaptive_threshold)
    shot_min_len_s: float = 0.5        # no cut closer than this to the previous one
    dedup: str = "consecutive"         # none | consecutive | dbscan
    dedup_similarity: float = 0.985    # consecutive: drop when similarity to last kept frame >= this
    dbscan_eps: float = 0.25           # dbscan: cosine distance between face vectors of one cluster
    face_detector: str = "mtcnn"
    min_face_px: int = 24              # smallest face side, in analysis pixels
    min_face_prob: float = 0.9
    mtcnn_thresholds: list[float] = field(default_factory=lambda: [0.7, 0.8, 0.8])  # P/R/O-Net stages
    face_embedders: list[str] = field(default_factory=lambda: ["dlib-resnet"])
    frame_embedders: list[str] = field(default_factory=lambda: ["effnet-lite0"])
    batch_size: int | str = "auto"    # frames per detector / embedder batch; auto: 2 on CPU, 16 on CUDA
    batch_timeout_s: float = 0.1       # live: a partial batch goes after this long (keeps the lag low)
    batch_timeout_file_s: float = 0.25  # files: counted from the batch's first frame
    queue_size: int | str = "auto"    # batches between stages (back-pressure); auto: 1 on CPU, 2 on CUDA
    index_kind: str = "flat"           # flat | hnsw | ivf
    checkpoint_every_s: float = 10.0   # FAISS files saved at most this often (SQLite commits per batch)
    device: str = "auto"               # auto | cpu | cuda
    weights_dir: str | None = None     # air-gapped sites: local weights for the hub models

    def batching(self, device_type: str) -> tuple[int, int]:
        """(batch size, queue size) for a device. On 2 CPU cores larger batches bought no throughput
        and only added lag; a GPU needs batches to be efficient, and one batch there takes milliseconds."""
        auto = {"batch_size": 16 if device_type == "cuda" else 2, "queue_size": 2 if device_type == "cuda" else 1}
        out = []
        for key in ("batch_size", "queue_size"):
            value = getattr(self, key)
            if value == "auto":
                value = auto[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"ingest.{key} must be a whole number >= 1 or 'auto', not {value!r}")
            out.append(value)
        return out[0], out[1]


@dataclass
class QueryConfig:
    top_k: int = 5000
    fusion: str = "max"
    use_both: bool = False             # face and frame features for every photo
    limit: int = 50                    # shots returned by a query unless asked otherwise (0 = all)


@dataclass
class CastConfig:
    enabled: bool = True               # track faces and grow the cast while ingesting
    metric: str = "l2"                 # cosine | l2 | l1 between track vectors
    threshold: float = 0.45            # initial per-track threshold T (l2 on unit vectors: 0.45 ~ cosine 0.90)
    best_q: int = 1                    # track vector = best face (1) or mean of the best q faces
    min_quality: float = 0.15          # tracks below this face quality are treated as faceless
    f_min: int = 2                     # tracks with fewer detections are dropped (posters, masks)
    expand_margin: float = 1.0         # query --expand: a photo pulls in clusters within threshold x this

    def params(self, feature: str):
        from index.cast import CastParams
        from index.tracks import TrackParams
        return CastParams(feature=feature, metric=self.metric, threshold=self.threshold, best_q=self.best_q,
                          min_quality=self.min_quality, track=TrackParams(f_min=self.f_min))


@dataclass
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    cast: CastConfig = field(default_factory=CastConfig)
    name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(section)}
    for key, value in (values or {}).items():
        if key not in known:
            raise InputError(f"unknown setting '{where}.{key}' (known: {', '.join(sorted(known))})")
        setattr(section, key, value)


def load_config(name_or_path: str | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Load a preset by name (configs/NAME.yaml) or path; None gives the default preset."""
    cfg = Config()
    target = name_or_path or "default"
    path = Path(target)
    if not path.suffix:
        path = CONFIG_DIR / f"{target}.yaml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise InputError(f"config '{target}' not found (presets: {presets})")
    data = yaml.safe_load(path.read_text()) or {}
    cfg.name = data.get("name", path.stem)
    _apply(cfg.ingest, data.get("ingest", {}), "ingest")
    _apply(cfg.query, data.get("query", {}), "query")
    _apply(cfg.cast, data.get("cast", {}), "cast")
    for section, values in (overrides or {}).items():
        _apply(getattr(cfg, section), values, section)
    cfg.ingest.batching("cpu")  # a bad value fails here, before any model loads
    return cfg
