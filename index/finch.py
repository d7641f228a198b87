"""FINCH clustering (Sarfraz, Sharma, Stiefelhagen, CVPR 2019) with cannot-link constraints.

FINCH has no parameter: every item links to its first (nearest) neighbour, the connected
components of that graph are the first partition, and the same step on the partition's cluster
means gives the next, coarser one, until nothing merges. Here two items that share a cannot-link
group (two tracks of one shot) are never in one cluster:
  - a neighbour that shares a group is masked out before the first neighbour is taken;
  - the first-neighbour links are joined shortest first, and a link whose two sides (as joined so
    far) share a group is dropped, so a component that would hold two tracks of one shot is split
    at its longest links. (FINCH's third rule, "i and j have the same first neighbour", would join
    two tracks of one shot that pick the same neighbour: the closer one joins, the other stays out.)

Which level, without a per-clip threshold (gate="cannot-link"): the masked neighbours are the
video's own evidence of how close two different people come. A link i–j is kept only when it is
shorter than the distance from i, and from j, to the nearest cluster it cannot be one with (its
nearest known-different person, in the same scenes and light). A cluster with no such neighbour
(a face alone in all its shots) is held to the video's typical value: the median, over tracks that
have one, of the distance to the nearest known-different track. The hierarchy climbs until no link
passes and keeps the last partition.

A cluster must also stay coherent (coherence=0.8): two clusters join only when the tracks of the
union are, on average, closer to each other than 0.8x that typical distance. First-neighbour links
chain: a smeared or tiny face sits near everyone, so without this rule the smears of many people
climbed into one catch-all cluster, every link short, the whole far too wide. Measured on devhard's
clusters: one-person clusters average 0.13-0.77x the typical distance, mixed ones 0.86-1.08x. On four
sets of devhard indexes (this default, session 6's, two other face-alignment variants) BCubed precision
over labelled tracks went 0.83-0.90 -> 0.93-0.97 and cast F1 rose on each (0.738 -> 0.758,
0.755 -> 0.764, 0.674 -> 0.711, 0.611 -> 0.632); the dev clips' cast F1 stays 0.957.

Every rule is local or a median, so a long film behaves as a short clip does (a minimum over all
pairs would shrink as the film grows). A video with no cannot-link pair at all gives no evidence and
keeps FINCH's first partition; so does gate=None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    u = _unit(np.asarray(x, np.float64))
    return np.clip(1.0 - u @ u.T, 0.0, 2.0)


@dataclass
class Finch:
    labels: np.ndarray                    # the chosen partition: cluster per item, 0..k-1 in order of first item
    partitions: list[np.ndarray] = field(default_factory=list)   # every level, finest first
    level: int = -1                       # index of the chosen partition (-1: nothing merged, singletons)
    typical: float | None = None          # median distance to the nearest known-different track (None: no evidence)


class _Sets:
    """Union-find whose sets remember their cannot-link groups and, when a coherence bound is given,
    their items (the tracks under them) and the sum of their items' pairwise distances."""

    def __init__(self, groups: list[set], items: list[np.ndarray] | None = None,
                 item_dist: np.ndarray | None = None, bound: float | None = None):
        self.parent = list(range(len(groups)))
        self.groups = [set(g) for g in groups]
        self.bound, self.dist = bound, item_dist
        self.items = items
        self.within = None
        if bound is not None:
            self.within = [float(item_dist[np.ix_(m, m)].sum(dtype=np.float64)) / 2 for m in items]

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if self.groups[ra] & self.groups[rb]:
            return False
        if self.bound is not None:
            a, b = self.items[ra], self.items[rb]
            total = self.within[ra] + self.within[rb] + float(self.dist[np.ix_(a, b)].sum(dtype=np.float64))
            n = len(a) + len(b)
            if total / (n * (n - 1) / 2) >= self.bound:
                return False  # the union would be wider than one person's faces are
        if len(self.groups[ra]) < len(self.groups[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.groups[ra] |= self.groups[rb]
        self.groups[rb] = set()
        if self.bound is not None:
            self.within[ra] = total
            self.items[ra] = np.concatenate([self.items[ra], self.items[rb]])
            self.items[rb] = self.items[rb][:0]
        return True


def _relabel(labels) -> np.ndarray:
    """0..k-1 in order of first appearance."""
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(l), len(order)) for l in labels], np.int64)


def share_matrix(groups: list[set]) -> np.ndarray:
    """k x k: do items i and j share a cannot-link group? (False on the diagonal)"""
    k = len(groups)
    keys = sorted({g for gs in groups for g in gs}, key=repr)
    if not keys:
        return np.zeros((k, k), bool)
    col = {g: c for c, g in enumerate(keys)}
    m = np.zeros((k, len(keys)), np.float32)
    for i, gs in enumerate(groups):
        for g in gs:
            m[i, col[g]] = 1.0
    out = (m @ m.T) > 0
    np.fill_diagonal(out, False)
    return out


def nearest_different(dist: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Per item, the distance to the nearest item it shares a group with (inf when none)."""
    return np.where(share, dist, np.inf).min(axis=1) if len(dist) else np.zeros(0)


def first_neighbour_step(dist: np.ndarray, groups: list[set], gated: bool = False,
                         typical: float | None = None, items: list[np.ndarray] | None = None,
                         item_dist: np.ndarray | None = None, bound: float | None = None) -> np.ndarray:
    """One FINCH step on k items with their pairwise distances and cannot-link groups: labels
    0..m-1 of the merged items. gated: a link i–κ(i) must be shorter than the nearest
    known-different item of both ends (`typical` for an end that has none). bound: a link is also
    dropped when the tracks under its two sides as joined so far (items: the track indices under each
    item; item_dist: the tracks' pairwise distances) would average this far apart or more."""
    k = len(dist)
    if k < 2:
        return np.zeros(k, np.int64)
    d = np.array(dist, np.float64, copy=True)
    share = share_matrix(groups)
    limit = np.full(k, np.inf)
    if gated:
        limit = nearest_different(d, share)
        limit[~np.isfinite(limit)] = np.inf if typical is None else typical
    d[share] = np.inf
    np.fill_diagonal(d, np.inf)
    nn = np.argmin(d, axis=1)
    links = set()
    for i in range(k):
        j = int(nn[i])
        if np.isfinite(d[i, j]) and d[i, j] < min(limit[i], limit[j]):
            links.add((float(d[i, j]), min(i, j), max(i, j)))
    sets = _Sets(groups, items, item_dist, bound)
    for _, i, j in sorted(links):
        sets.union(i, j)
    return _relabel([sets.find(i) for i in range(k)])


COHERENCE = 0.8  # a cluster's tracks average under this x the typical known-different distance (module doc)


def finch(vectors: np.ndarray, groups, gate: str | None = "cannot-link", max_levels: int = 64,
          coherence: float | None = COHERENCE) -> Finch:
    """vectors: N x dim (cosine distance between cluster means); groups: N cannot-link keys (the
    shot of each track; None = no constraint). gate: "cannot-link" (see the module doc) or None
    (plain constrained FINCH, first partition). coherence: the bound on a cluster's mean pairwise
    distance, as a share of the typical known-different distance (None or 0: no bound; it needs the
    gate's evidence)."""
    if gate not in ("cannot-link", None):
        raise ValueError(f"unknown FINCH gate {gate!r} (known: 'cannot-link', None)")
    x = np.asarray(vectors, np.float64)
    n = len(x)
    groups = [set() if g is None else {g} for g in groups]
    if n == 0:
        return Finch(np.zeros(0, np.int64))
    typical = None
    item_dist = None
    if gate is not None:
        item_dist = cosine_matrix(x).astype(np.float32)  # kept for the coherence sums: half the memory
        near = nearest_different(item_dist, share_matrix(groups))
        near = near[np.isfinite(near)]
        typical = float(np.median(near)) if len(near) else None
    gated = typical is not None
    bound = coherence * typical if gated and coherence else None
    if bound is None:
        item_dist = None  # no coherence sums: the N x N matrix need not outlive the gate
    labels = np.arange(n, dtype=np.int64)
    partitions: list[np.ndarray] = []
    for _ in range(max_levels):
        k = int(labels.max()) + 1
        if k < 2:
            break
        sums = np.zeros((k, x.shape[1]))
        np.add.at(sums, labels, x)
        cgroups = [set() for _ in range(k)]
        for i, c in enumerate(labels):
            cgroups[c] |= groups[i]
        items = None
        if bound is not None:  # the tracks under each cluster: one sort, not a scan of all tracks per cluster
            order = np.argsort(labels, kind="stable")
            items = np.split(order, np.cumsum(np.bincount(labels, minlength=k))[:-1])
        step = first_neighbour_step(cosine_matrix(sums), cgroups, gated, typical, items, item_dist, bound)
        if step.max() + 1 == k:
            break
        labels = _relabel(step[labels])
        partitions.append(labels.copy())
        if not gated:
            break  # no evidence to climb on: FINCH's first partition
    if not partitions:
        return Finch(np.arange(n, dtype=np.int64), [], -1, typical)
    return Finch(partitions[-1], partitions, len(partitions) - 1, typical)
