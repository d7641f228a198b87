"""Settings for ingest and query, loaded from a YAML preset in configs/ plus overrides.

Every value is checked once, at load, before any work starts: its type comes from the dataclass
annotation, its range or allowed names from RULES below (or a field's metadata["rule"]). A new
field gets its type checked with no extra code; give it a rule for a range or a list of names."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class IngestConfig:
    analysis_width: int = 640          # frames are scaled to this width in the decoder
    analysis_max_height: int = 1280    # ... and to at most this height (a 100x10000 video stays small;
                                       # a 9:16 phone video at 640 wide is 1138 high, so it is untouched)
    sample_fps: float = 5.0            # frames per second kept inside each shot (the report's 5)
    shot_detector: str = "content"     # content | adaptive
    shot_threshold: float = 20.0       # ContentDetector threshold (adaptive: adaptive_threshold)
    shot_min_len_s: float = 0.5        # no cut closer than this to the previous one
    dedup: str = "consecutive"         # none | consecutive | dbscan
    dedup_similarity: float = 0.985    # consecutive: drop when similarity to last kept frame >= this
    dedup_max_gap_s: float = 0.0       # consecutive: ... unless the shot has kept no frame for this long (0: never)
    dbscan_eps: float = 0.25           # dbscan: cosine distance between face vectors of one cluster
    face_detector: str = "mtcnn"
    min_face_px: int = 24              # smallest face side, in analysis pixels, looked for in every frame
    # smaller faces (wide shots, low-resolution video) down to small_face_px are looked for only in shots that
    # have them: the fine pyramid levels cost ~2x the rest, so a shot's first kept frame probes for them, then
    # one every N sampled frames' time (N / sample_fps seconds, however many frames dedup dropped), and a probe
    # that finds one turns the fine levels on for the rest of that shot (small_face_px 0 = never)
    small_face_px: int = 12
    small_face_probe_every: int = 5
    small_face_full_probes: bool = True  # false: probes skip the largest fine level (faces ~12-17 px), 1/3 the cost
    min_face_prob: float = 0.9
    # a probe frame darker than this (mean luma 0-1) where no face was found is looked at again after local
    # contrast equalisation (CLAHE); its faces are still embedded from the frame's own pixels (0: never)
    dark_look_luma: float = 0.0
    mtcnn_thresholds: list[float] = field(default_factory=lambda: [0.7, 0.8, 0.8])  # P/R/O-Net stages
    face_embedders: list[str] = field(default_factory=lambda: ["dlib-resnet"])
    face_flip: bool = True             # a face's vector is the mean of it and its mirror image (steadier)
    face_chip_width: int = 1920        # faces are embedded from the source's pixels, up to this wide (0: analysis image)
    frame_vector_fps: float = 5.0      # frame-embedder vectors per second of a shot (faces keep sample_fps)
    face_context: bool = True          # keep each face's hair/clothes colours (query.context_weight re-ranks by them)
    frame_embedders: list[str] = field(default_factory=lambda: ["effnet-lite0"])
    batch_size: int | str = "auto"    # frames per detector / embedder batch; auto: 2 on CPU, 16 on CUDA
    batch_timeout_s: float = 0.1       # live: a partial batch goes after this long (keeps the lag low)
    batch_timeout_file_s: float = 0.25  # files: counted from the batch's first frame
    queue_size: int | str = "auto"    # batches between stages (back-pressure); auto: 1 on CPU, 2 on CUDA
    shared_batch_size: int | str = "auto"  # several sources in one process: most frames of all of them in
                                       # one shared detector / embedder call; auto: 8 on CPU, 64 on CUDA
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
    lenient_photos: bool = True        # a photo without a face at the usual settings gets a padded, enlarged, lenient look
    scene_tail: bool = True            # after the face hits: faceless shots that look like the best one (frame features)
    # a shot's score: this much from its best face track (quality-weighted best faces), the rest from its best
    # face. devhard MAP (castfinder eval ablation): 0.792 faces only, 0.764 at 0.5, 0.714 tracks only
    track_weight: float = 0.0
    # face hits re-ranked by their surroundings (hair, clothes) against the video's best hit (index/search.py
    # _rerank_by_context): devhard MAP 0.792 -> 0.841 at 1.0 (offline 0.5: 0.833, 1.5: 0.840); dev stays 1.000
    context_weight: float = 1.0


@dataclass
class CastConfig:
    enabled: bool = True               # track faces and grow the cast while ingesting
    metric: str = "l2"                 # cosine | l2 | l1 between track vectors
    threshold: float = 0.45            # initial per-track threshold T (l2 on unit vectors: 0.45 ~ cosine 0.90)
    best_q: int = 1                    # track vector = best face (1) or mean of the best q faces
    min_quality: float = 0.15          # tracks below this face quality are treated as faceless
    f_min: int = 2                     # tracks with fewer detections are dropped (posters, masks)
    expand_margin: float = 1.0         # query --expand: a photo pulls in clusters within threshold x this
    # batch clustering of a finished video: finch (no parameter, cannot-link gated: index/finch.py) or ducros
    # (per-cluster thresholds from `threshold`). Cast F1 (benchmarks/cast_eval.py), devhard / dev: 0.692 / 0.951
    # vs 0.618 / 0.945; BCubed purity 0.93 vs 0.86
    method: str = "finch"
    # finch: two clusters join only when their tracks average closer than this x the video's typical distance
    # to a known-different person (index/finch.py; 0: no bound). devhard cast F1 0.738 -> 0.758, BCubed P
    # 0.86 -> 0.96; dev cast F1 stays 0.957
    coherence: float = 0.8
    face_metric: str = "wccn"          # the video's own face metric, refitted as shots close (index/face_metric.py): wccn | lda | none
    cluster_in_metric: bool = False    # cluster in that metric: finch devhard 0.692 -> 0.677, dev 0.951 -> 0.979: not by default



@dataclass
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    cast: CastConfig = field(default_factory=CastConfig)
    name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- validation ------------------------------------------------------------------------------------
# Names the layers above implement. They live here, at the bottom, so that checking a preset imports
# nothing above it; models/registry.py and index/fusion.py check at import that they offer exactly these.
FACE_EMBEDDER_NAMES = ("dlib-resnet", "facenet-vggface2", "arcface")
FRAME_EMBEDDER_NAMES = ("effnet-lite0", "clip-vit-b32", "clip-rn101", "beit-cls", "beit-mean")
FUSION_NAMES = ("max", "frequency", "rrf", "combsum", "combmnz", "combmax", "combmed", "combanz", "borda",
                "condorcet", "isr", "log_isr")


def _face_embedders() -> tuple[str, ...]:
    return FACE_EMBEDDER_NAMES


def _frame_embedders() -> tuple[str, ...]:
    return FRAME_EMBEDDER_NAMES


def _fusions() -> tuple[str, ...]:
    return FUSION_NAMES


@dataclass(frozen=True)
class Rule:
    """Limits for one setting. Numbers (and numbers inside a list) are held to gt/ge/lt/le; text
    (and text inside a list) must be one of `choices` (a tuple, or a function giving one);
    `length` fixes a list's length, `nonempty` asks for at least one item."""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | Callable[[], tuple] | None = None
    pattern: str | None = None        # text matching this regex is allowed besides `choices`
    pattern_text: str | None = None   # how the pattern reads in a message
    length: int | None = None
    nonempty: bool = False


FRACTION = Rule(ge=0.0, le=1.0)
POSITIVE = Rule(gt=0.0)

RULES: dict[str, Rule] = {
    "ingest.analysis_width": Rule(ge=32, le=3840),
    "ingest.analysis_max_height": Rule(ge=32, le=3840),
    "ingest.sample_fps": Rule(gt=0, le=240),
    "ingest.shot_detector": Rule(choices=("content", "adaptive", "hybrid")),
    "ingest.shot_threshold": Rule(gt=0, le=255),
    "ingest.shot_min_len_s": Rule(ge=0, le=3600),
    "ingest.dedup": Rule(choices=("none", "consecutive", "dbscan")),
    "ingest.dedup_similarity": FRACTION,
    "ingest.dedup_max_gap_s": Rule(ge=0, le=3600),
    "ingest.dbscan_eps": Rule(gt=0, le=2),
    "ingest.face_detector": Rule(choices=("mtcnn",)),
    "ingest.min_face_px": Rule(ge=12, le=1024),      # MTCNN's 12 px cell: smaller means upscaling every frame
    "ingest.min_face_prob": FRACTION,
    "ingest.small_face_px": Rule(ge=0, le=4096),
    "ingest.small_face_probe_every": Rule(ge=1, le=100_000),
    "ingest.dark_look_luma": FRACTION,
    "ingest.face_chip_width": Rule(ge=0, le=7680),
    "ingest.frame_vector_fps": Rule(gt=0, le=1000),
    "ingest.mtcnn_thresholds": Rule(gt=0, le=1, length=3),
    "ingest.face_embedders": Rule(choices=_face_embedders),
    "ingest.frame_embedders": Rule(choices=_frame_embedders),
    "ingest.batch_size": Rule(ge=1, le=1024, choices=("auto",)),
    "ingest.batch_timeout_s": Rule(gt=0, le=60),
    "ingest.batch_timeout_file_s": Rule(gt=0, le=60),
    "ingest.queue_size": Rule(ge=1, le=256, choices=("auto",)),
    "ingest.shared_batch_size": Rule(ge=1, le=4096, choices=("auto",)),
    "ingest.index_kind": Rule(choices=("flat", "hnsw", "ivf")),
    "ingest.checkpoint_every_s": Rule(gt=0, le=86400),
    "ingest.device": Rule(choices=("auto", "cpu", "cuda"), pattern=r"cuda:\d{1,2}", pattern_text="cuda:N"),
    "query.top_k": Rule(ge=1, le=100_000),
    "query.fusion": Rule(choices=_fusions),
    "query.limit": Rule(ge=0, le=100_000),
    "query.track_weight": FRACTION,
    "query.context_weight": Rule(ge=0, le=10),
    "cast.metric": Rule(choices=("cosine", "l2", "l1")),
    "cast.threshold": Rule(gt=0, le=4),
    "cast.best_q": Rule(ge=1, le=1000),
    "cast.min_quality": FRACTION,
    "cast.f_min": Rule(ge=1, le=10_000),
    "cast.expand_margin": Rule(gt=0, le=10),
    "cast.method": Rule(choices=("ducros", "finch")),
    "cast.coherence": Rule(ge=0, le=10),
    "cast.face_metric": Rule(choices=("none", "wccn", "lda")),
    "name": Rule(nonempty=True),
}


def _rule(key: str, f: dataclasses.Field) -> Rule:
    return f.metadata.get("rule") or RULES.get(key) or Rule()


def _choices(rule: Rule) -> tuple:
    c = rule.choices
    return tuple(c() if callable(c) else c) if c is not None else ()


def _bounds_text(rule: Rule) -> str:
    parts = [f"{op} {v:g}" for op, v in ((">", rule.gt), (">=", rule.ge), ("<", rule.lt), ("<=", rule.le))
             if v is not None]
    return " and ".join(parts)


def _describe(hint, rule: Rule) -> str:
    """What a setting accepts, in words, for the error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return ", or ".join(_describe(a, rule) for a in args)
    if origin is dict:
        return f"a mapping of {_describe(args[0], Rule()) if args else 'keys'} to {_describe(args[1], rule) if args else 'values'}"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items: " + "; ".join(_describe(a, rule) for a in args)
    if origin in (list, tuple):
        what = _describe(args[0] if args else Any, rule)
        n = f"{rule.length} " if rule.length else ""
        if what.startswith("one of: "):
            return f"a list of {n}names from: {what[len('one of: '):]}"
        return f"a list of {n}items, each {what}"
    if origin is typing.Literal:
        return "one of: " + ", ".join(map(str, args))
    if hint is type(None):
        return "empty (null)"
    if hint is bool:
        return "true or false"
    if hint in (int, float):
        word = "a whole number" if hint is int else "a number"
        bounds = _bounds_text(rule)
        return f"{word} {bounds}" if bounds else word
    if hint is str:
        names = _choices(rule)
        if names:
            extra = [rule.pattern_text] if rule.pattern_text else []
            return "one of: " + ", ".join(map(str, (*names, *extra)))
        return "non-empty text" if rule.nonempty else "text"
    return getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


def _coerce(value, hint, rule: Rule):
    """The value converted to the annotated type (an int where a float is asked), or _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _coerce(value, a, rule)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        kh, vh = args if args else (Any, Any)
        return {_coerce(k, kh, Rule()): _coerce(v, vh, rule) for k, v in value.items()}
    if origin is tuple and args and args[-1] is not Ellipsis:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a, rule) for v, a in zip(value, args))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if rule.length is not None and len(value) != rule.length:
            raise _Mismatch
        if rule.nonempty and not value:
            raise _Mismatch
        item = args[0] if args else Any
        items = [_coerce(v, item, rule) for v in value]
        return items if origin is list else tuple(items)
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        if hint is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise _Mismatch
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise _Mismatch
        if ((rule.gt is not None and not value > rule.gt) or (rule.ge is not None and not value >= rule.ge)
                or (rule.lt is not None and not value < rule.lt) or (rule.le is not None and not value <= rule.le)):
            raise _Mismatch
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch
        names = _choices(rule)
        if names or rule.pattern:
            import re
            if value not in names and not (rule.pattern and re.fullmatch(rule.pattern, value)):
                raise _Mismatch
        elif rule.nonempty and not value.strip():
            raise _Mismatch
        return value
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(key: str, value, hint, rule: Rule | None = None, where: str = "config"):
    """One setting against its annotation and rule: the (converted) value, or InputError naming
    the key, what it got and what it accepts."""
    rule = rule or Rule()
    try:
        return _coerce(value, hint, rule)
    except _Mismatch:
        raise InputError(f"{where}: {key} is {_show(value)}; it must be {_describe(hint, rule)}") from None


def _sections() -> dict[str, type]:
    """Config's fields that are dataclasses (ingest, query, cast, and any added later)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])}


def validate_section(section: Any, name: str, where: str = "config") -> None:
    """Check (and convert in place) every field of one section."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        key = f"{name}.{f.name}"
        setattr(section, f.name, check_value(key, getattr(section, f.name), hints[f.name], _rule(key, f), where))


def validate(cfg: Config, where: str = "config") -> Config:
    """Every value of a Config, plus the checks that span fields. Raises InputError (one line)."""
    hints = typing.get_type_hints(Config)
    sections = _sections()
    for f in dataclasses.fields(Config):
        if f.name in sections:
            validate_section(getattr(cfg, f.name), f.name, where)
        else:
            setattr(cfg, f.name, check_value(f.name, getattr(cfg, f.name), hints[f.name], _rule(f.name, f), where))
    ing = cfg.ingest
    if not ing.face_embedders and not ing.frame_embedders:
        raise InputError(f"{where}: ingest.face_embedders and ingest.frame_embedders are both empty; "
                         "at least one embedder is needed")
    return cfg


def _apply(section: Any, values: Any, where: str, name: str) -> None:
    if values is None:
        return
    if not isinstance(values, dict):
        raise InputError(f"{where}: section '{name}' must be a mapping of settings, not {_show(values)}")
    known = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in known:
            raise InputError(f"{where}: unknown setting '{name}.{key}' (known: {', '.join(sorted(known))})")
        setattr(section, key, value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice is an error (YAML would silently keep the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice", key_node.start_mark)
            seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, where: str) -> dict:
    try:
        if path.stat().st_size > 1 << 20:  # a preset is a few lines: do not read a huge file into memory
            raise InputError(f"{where}: over 1 MB, not a preset")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0][:120]
        raise InputError(f"{where}: not valid YAML{at} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: must be a mapping of sections (ingest:, query:, cast:), not {_show(data)}")
    return data


def load_config(name_or_path: str | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Load a preset by name (configs/NAME.yaml) or path; None gives the default preset. Every
    value is checked here, so a bad one stops the command before any model loads or file is written."""
    cfg = Config()
    target = name_or_path or "default"
    path = Path(target)
    if not path.suffix:
        path = CONFIG_DIR / f"{target}.yaml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise InputError(f"config '{target}' not found (presets: {presets})")
    where = f"config {target}"
    data = _read_yaml(path, where)
    sections = _sections()
    top = {f.name for f in dataclasses.fields(Config)}
    for key in data:
        if key not in top:
            raise InputError(f"{where}: unknown section '{key}' (known: {', '.join(sorted(top))})")
    cfg.name = data.get("name", path.stem)
    for name in sections:
        _apply(getattr(cfg, name), data.get(name), where, name)
    for name, values in (overrides or {}).items():
        if name not in sections:
            raise InputError(f"unknown config section '{name}' (known: {', '.join(sorted(sections))})")
        _apply(getattr(cfg, name), values, "option", name)
    return validate(cfg, where)
