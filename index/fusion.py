"""Fusing per-photo shot rankings into one: max similarity (the report's best), frequency, and
ranx's rank/score fusion methods (rrf, combsum, combmnz, ...)."""

from __future__ import annotations

import threading

from castfinder.errors import InputError

# numba's default (workqueue) threading layer aborts the whole process when two threads enter a
# parallel kernel at once, and ranx's fusions are parallel kernels: one fusion at a time.
_RANX_LOCK = threading.Lock()

# our names → ranx's (the unsupervised ones: no training runs needed)
RANX_METHODS = {"rrf": "rrf", "combsum": "sum", "combmnz": "mnz", "combmax": "max", "combmed": "med",
                "combanz": "anz", "borda": "bordafuse", "condorcet": "condorcet", "isr": "isr", "log_isr": "log_isr"}
METHODS = ("max", "frequency", *RANX_METHODS)

ShotKey = tuple[int, int]  # (video_id, shot index)


def _key(k: ShotKey) -> str:
    return f"{k[0]}:{k[1]}"


def _unkey(s: str) -> ShotKey:
    a, b = s.split(":")
    return int(a), int(b)


def fuse(per_photo: list[dict[ShotKey, float]], method: str = "max") -> list[tuple[ShotKey, float]]:
    """per_photo: one {shot: score} per query vector. Returns shots best first."""
    if method not in METHODS:
        raise InputError(f"unknown fusion '{method}' (known: {', '.join(METHODS)})")
    runs = [r for r in per_photo if r]
    if not runs:
        return []
    if method == "max" or len(runs) == 1:  # one photo: every fusion is that photo's own ranking
        fused: dict[ShotKey, float] = {}
        for run in runs:
            for k, s in run.items():
                fused[k] = max(fused.get(k, float("-inf")), s)
        return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    if method == "frequency":
        count: dict[ShotKey, int] = {}
        best: dict[ShotKey, float] = {}
        for run in runs:
            for k, s in run.items():
                count[k] = count.get(k, 0) + 1
                best[k] = max(best.get(k, float("-inf")), s)
        # shots found by more photos first; the best similarity breaks ties. Score = count + best/10
        # keeps that order in one number (similarities are at most 1).
        return sorted(((k, count[k] + best[k] / 10.0) for k in count), key=lambda kv: (-kv[1], kv[0]))
    return _ranx_fuse(runs, method)


def _ranx_fuse(runs: list[dict[ShotKey, float]], method: str) -> list[tuple[ShotKey, float]]:
    from ranx import Run
    from ranx import fuse as ranx_fuse

    ranx_runs = [Run({"q": {_key(k): float(s) for k, s in run.items()}}, name=f"photo{i}") for i, run in enumerate(runs)]
    norm = "min-max" if method.startswith("comb") else None
    with _RANX_LOCK:
        fused = ranx_fuse(runs=ranx_runs, norm=norm, method=RANX_METHODS[method])
    scores = fused.to_dict().get("q", {})
    return sorted(((_unkey(k), float(s)) for k, s in scores.items()), key=lambda kv: (-kv[1], kv[0]))


def warm_up() -> None:
    """ranx compiles with numba on first use (~30 s cold): do it before anyone waits for it."""
    for method in ("rrf", "combsum", "combmnz"):
        _ranx_fuse([{(0, 0): 1.0, (0, 1): 0.5}, {(0, 1): 0.9, (0, 2): 0.1}], method)
