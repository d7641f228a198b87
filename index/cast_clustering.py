"""Agglomerative clustering of face tracks with per-cluster thresholds (Ducros et al. 2023).

Every track starts as a cluster with a mean vector and a threshold T. The closest finite pair
(a, b) at distance d merges only when d <= min(Ta, Tb); the merged cluster's vector is the mean of
its members and its threshold is the radius of the intersection of the two spheres,
    T' = sqrt(4 Ta^2 d^2 - (Ta^2 - Tb^2 + d^2)^2) / (2 d).
Two tracks of one shot can never be one character (distance +inf), and merged clusters inherit
that. A refused pair is +inf for good.

A pair that fails d <= min(Ta, Tb) stays refused until one side changes, and thresholds only
shrink, so only pairs that could merge go on a heap. After a merge, one matrix-vector product gives
the new cluster's distances to all others: O(N * dim) numpy per merge, no N^3 Python loops."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

METRICS = ("cosine", "l2", "l1")


def distances(metric: str, x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance from one vector x to each row of ys."""
    if metric == "cosine":
        nx = np.linalg.norm(x) or 1.0
        ny = np.linalg.norm(ys, axis=1)
        ny[ny == 0] = 1.0
        return 1.0 - (ys @ x) / (ny * nx)
    if metric == "l2":
        sq = np.einsum("ij,ij->i", ys, ys) + x @ x - 2.0 * (ys @ x)
        return np.sqrt(np.maximum(sq, 0.0))
    if metric == "l1":
        return np.abs(ys - x).sum(axis=1)
    raise ValueError(f"unknown metric '{metric}' (known: {', '.join(METRICS)})")


def pairwise_block(metric: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if metric == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return 1.0 - an @ bn.T
    if metric == "l2":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.maximum(sq, 0.0))
    if metric == "l1":
        return np.abs(a[:, None, :] - b[None, :, :]).sum(-1)
    raise ValueError(f"unknown metric '{metric}' (known: {', '.join(METRICS)})")


def merged_threshold(ta: float, tb: float, d: float) -> float:
    """Radius of the intersection of spheres (centre distance d, radii ta, tb). When one sphere
    lies inside the other (or the centres coincide) the intersection is the smaller sphere."""
    if d <= abs(ta - tb) or d <= 1e-12:
        return min(ta, tb)
    inner = 4 * ta * ta * d * d - (ta * ta - tb * tb + d * d) ** 2
    if inner <= 0:
        return 0.0
    return float(np.sqrt(inner) / (2 * d))


@dataclass
class Clustering:
    labels: np.ndarray        # cluster index per track, 0..n_clusters-1, in order of first track
    means: np.ndarray         # n_clusters x dim
    thresholds: np.ndarray    # n_clusters
    sizes: np.ndarray         # tracks per cluster
    merges: int


def cluster(vectors: np.ndarray, groups, threshold: float | np.ndarray, metric: str = "l2",
            block: int = 2048) -> Clustering:
    """vectors: N x dim track vectors; groups: N cannot-link keys (the shot of each track);
    threshold: initial T of every track (scalar or per track)."""
    x = np.asarray(vectors, np.float64)
    n = len(x)
    if n == 0:
        return Clustering(np.zeros(0, int), np.zeros((0, x.shape[1] if x.ndim == 2 else 0)), np.zeros(0), np.zeros(0, int), 0)
    t = np.broadcast_to(np.asarray(threshold, np.float64), (n,)).copy()
    means = x.copy()
    sizes = np.ones(n, np.int64)
    alive = np.ones(n, bool)
    version = np.zeros(n, np.int64)
    members = [[i] for i in range(n)]
    groups = list(groups)
    shot_sets = [{g} for g in groups]
    heap: list[tuple[float, int, int, int, int]] = []
    sq = np.einsum("ij,ij->i", means, means)

    # initial candidate pairs, block by block (never an N x N matrix in memory)
    gid = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    group_of = np.array([gid[g] for g in groups], np.int64)
    for s in range(0, n, block):
        d = pairwise_block(metric, x[s:s + block], x)
        rows, cols = np.nonzero(d <= np.minimum(t[s:s + block, None], t[None, :]))
        rows += s
        keep = (rows < cols) & (group_of[rows] != group_of[cols])
        rows, cols = rows[keep], cols[keep]
        heap.extend(zip(d[rows - s, cols].tolist(), rows.tolist(), cols.tolist(), [0] * len(rows), [0] * len(rows)))
    heapq.heapify(heap)

    merges = 0
    while heap:
        d, a, b, va, vb = heapq.heappop(heap)
        if not (alive[a] and alive[b]) or version[a] != va or version[b] != vb:
            continue  # stale: one side has changed since this pair was pushed
        if d > min(t[a], t[b]) or shot_sets[a] & shot_sets[b]:
            continue  # refused (or cannot-link): +inf until one side changes
        # merge b into a
        total = sizes[a] + sizes[b]
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / total
        t[a] = merged_threshold(t[a], t[b], d)
        sizes[a] = total
        members[a].extend(members[b])
        shot_sets[a] |= shot_sets[b]
        alive[b] = False
        members[b] = []
        version[a] += 1
        merges += 1
        others = np.flatnonzero(alive)
        others = others[others != a]
        if len(others) == 0:
            break
        if metric == "l2":  # squared norms cached: one matrix-vector product per merge
            sq[a] = means[a] @ means[a]
            dist = np.sqrt(np.maximum(sq[others] + sq[a] - 2.0 * (means[others] @ means[a]), 0.0))
        else:
            dist = distances(metric, means[a], means[others])
        ok = dist <= np.minimum(t[a], t[others])
        for c, dc in zip(others[ok], dist[ok]):
            if not (shot_sets[a] & shot_sets[c]):
                lo, hi = (a, int(c)) if a < c else (int(c), a)
                heapq.heappush(heap, (float(dc), lo, hi, int(version[lo]), int(version[hi])))

    roots = [i for i in range(n) if alive[i]]
    roots.sort(key=lambda r: min(members[r]))
    labels = np.empty(n, np.int64)
    for k, r in enumerate(roots):
        labels[members[r]] = k
    return Clustering(labels, means[roots], t[roots], sizes[roots], merges)


def join(vector: np.ndarray, group, threshold: float, means: np.ndarray, thresholds: np.ndarray,
         cluster_groups: list[set], metric: str = "l2") -> tuple[int, float] | None:
    """Incremental step: the existing cluster a new track joins by the same rule (closest with
    d <= min(T, Tc) and no shared shot), or None. Returns (cluster index, distance)."""
    if len(means) == 0:
        return None
    dist = distances(metric, np.asarray(vector, np.float64), np.asarray(means, np.float64))
    ok = (dist <= np.minimum(threshold, np.asarray(thresholds))) & np.array([group not in g for g in cluster_groups])
    if not ok.any():
        return None
    c = int(np.flatnonzero(ok)[np.argmin(dist[ok])])
    return c, float(dist[c])
