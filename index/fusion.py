"""Fusing per-photo shot rankings into one: max similarity (the report's best), frequency, and
ranx's rank/score fusion methods (rrf, combsum, combmnz, ...)."""

from __future__ import annotations

import threading

import numpy as np

from castfinder.core.config import FUSION_NAMES
from castfinder.core.errors import InputError

# numba's default (workqueue) threading layer aborts the whole process when two threads enter a
# parallel kernel at once, and ranx's fusions are parallel kernels: one fusion at a time.
_RANX_LOCK = threading.Lock()

# our names → ranx's (the unsupervised ones: no training runs needed)
RANX_METHODS = {"rrf": "rrf", "combsum": "sum", "combmnz": "mnz", "combmax": "max", "combmed": "med",
                "combanz": "anz", "borda": "bordafuse", "condorcet": "condorcet", "isr": "isr", "log_isr": "log_isr"}
METHODS = ("max", "frequency", *RANX_METHODS)
assert METHODS == FUSION_NAMES, "castfinder.core.config's fusion names are out of step with index/fusion.py"
RRF_K = 60  # ranx's default

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


def fuse_arrays(keys: np.ndarray, scores: np.ndarray, query: np.ndarray, method: str = "max"
                ) -> tuple[np.ndarray, np.ndarray]:
    """The same fusions over flat arrays (one entry per (query, shot): its shot key, its score and
    which query): max and frequency in numpy, the ranx methods through dicts. Returns keys and
    scores, best first (ties: lower key first, as `fuse`)."""
    if method not in METHODS:
        raise InputError(f"unknown fusion '{method}' (known: {', '.join(METHODS)})")
    if len(keys) == 0:
        return keys, scores
    n_runs = len(np.unique(query))
    if method in ("max", "frequency") or n_runs == 1:
        uniq, inverse = np.unique(keys, return_inverse=True)
        best = np.full(len(uniq), -np.inf)
        np.maximum.at(best, inverse, scores)
        fused = best if method != "frequency" or n_runs == 1 else np.bincount(inverse) + best / 10.0
        order = np.lexsort((uniq, -fused))
        return uniq[order], fused[order]
    if method == "rrf":  # the same formula as ranx (k = 60, ranks from 1), in numpy: no dicts
        order = np.lexsort((-scores, query))
        q_sorted = query[order]
        starts = np.searchsorted(q_sorted, q_sorted, side="left")
        ranks = np.empty(len(order), np.float64)
        ranks[order] = np.arange(len(order)) - starts + 1
        uniq, inverse = np.unique(keys, return_inverse=True)
        fused = np.bincount(inverse, weights=1.0 / (RRF_K + ranks))
        order = np.lexsort((uniq, -fused))
        return uniq[order], fused[order]
    runs: dict[int, dict] = {}
    for k, sc, q in zip(keys.tolist(), scores.tolist(), query.tolist()):
        runs.setdefault(q, {})[(k >> 32, k & 0xFFFFFFFF)] = sc
    fused_list = fuse(list(runs.values()), method)
    return (np.array([(a << 32) | b for (a, b), _ in fused_list], np.int64),
            np.array([sc for _, sc in fused_list], np.float64))


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
