"""The Ducros et al. agglomerative algorithm on small hand-made sets where the answer is known."""

import math

import numpy as np
import pytest

from index.cast_clustering import cluster, join, merged_threshold


def test_threshold_formula_against_hand_worked_values():
    # equal radii 1, centres 1 apart: the lens radius is sqrt(1 - 1/4) = sqrt(3)/2
    assert merged_threshold(1.0, 1.0, 1.0) == pytest.approx(math.sqrt(3) / 2)
    # 3-4-5 triangle: radii 3 and 4, centres 5 apart → intersection circle radius 12/5
    assert merged_threshold(3.0, 4.0, 5.0) == pytest.approx(2.4)
    # T' = sqrt(4 Ta² d² − (Ta² − Tb² + d²)²) / (2d) with Ta=0.5, Tb=0.4, d=0.3, worked by hand:
    # 4·0.25·0.09 = 0.09; (0.25 − 0.16 + 0.09)² = 0.0324; sqrt(0.0576) = 0.24; / 0.6 = 0.4
    assert merged_threshold(0.5, 0.4, 0.3) == pytest.approx(0.4)
    # one sphere inside the other, or the same centre: the smaller sphere
    assert merged_threshold(1.0, 0.2, 0.5) == pytest.approx(0.2)
    assert merged_threshold(0.3, 0.3, 0.0) == pytest.approx(0.3)
    # the merged threshold never exceeds either input
    for ta, tb, d in [(0.4, 0.45, 0.1), (0.45, 0.45, 0.44), (0.2, 0.6, 0.5)]:
        assert merged_threshold(ta, tb, d) <= min(ta, tb) + 1e-12


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_two_characters_separate_and_merge_within():
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    vecs = [unit(a + rng.normal(0, 0.03, 16)) for _ in range(5)] + [unit(b + rng.normal(0, 0.03, 16)) for _ in range(4)]
    res = cluster(np.stack(vecs), groups=range(9), threshold=0.45, metric="l2")
    assert list(res.labels) == [0] * 5 + [1] * 4
    assert list(res.sizes) == [5, 4] and res.merges == 7
    assert all(res.thresholds <= 0.45)


def test_cannot_link_blocks_a_merge_and_is_inherited():
    # tracks 0 and 1 are the same face but in one shot: never one cluster, even through track 2
    v = unit([1.0, 0.0, 0.0])
    near = unit([1.0, 0.05, 0.0])
    res = cluster(np.stack([v, v, near]), groups=["s1", "s1", "s2"], threshold=0.5, metric="l2")
    assert res.labels[0] != res.labels[1]
    assert len(set(res.labels)) == 2        # track 2 joins one of them, then inherits the cannot-link


def test_refused_pair_when_distance_exceeds_the_smaller_threshold():
    x = np.stack([unit([1, 0]), unit([1, 0.6])])       # l2 distance ~0.54
    d = float(np.linalg.norm(x[0] - x[1]))
    assert cluster(x, [0, 1], np.array([0.6, 0.5])).merges == 0    # 0.54 > min(0.6, 0.5)
    res = cluster(x, [0, 1], np.array([0.6, 0.56]))
    assert res.merges == 1 and res.thresholds[0] == pytest.approx(merged_threshold(0.6, 0.56, d))


def test_shrinking_threshold_stops_a_chain():
    # points on a line 0.3 apart with T=0.35: single linkage would chain them all; here the merged
    # threshold shrinks (sqrt(T² − d²/4) = 0.32 after the first merge) and the chain stops
    pts = np.stack([[0.0, 0], [0.3, 0], [0.6, 0], [0.9, 0], [1.2, 0]])
    res = cluster(pts, range(5), 0.35, metric="l2")
    assert 1 < len(res.sizes) < 5


def test_metrics_and_join():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=8))
    vecs = np.stack([unit(base + rng.normal(0, 0.02, 8)) for _ in range(3)])
    for metric, t in [("cosine", 0.05), ("l2", 0.3), ("l1", 0.8)]:
        assert len(cluster(vecs, range(3), t, metric=metric).sizes) == 1, metric
    res = cluster(vecs, range(3), 0.3)
    groups = [{0, 1, 2}]
    assert join(base, 7, 0.3, res.means, res.thresholds, groups) is not None
    assert join(base, 1, 0.3, res.means, res.thresholds, groups) is None      # its shot is already in the cluster
    assert join(-base, 7, 0.3, res.means, res.thresholds, groups) is None     # too far


def test_thousands_of_tracks_are_fast():
    import time
    rng = np.random.default_rng(2)
    centres = np.stack([unit(rng.normal(size=128)) for _ in range(40)])
    who = rng.integers(0, 40, 4000)
    vecs = centres[who] + rng.normal(0, 0.02, (4000, 128))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    t0 = time.perf_counter()
    res = cluster(vecs, range(4000), 0.45)
    elapsed = time.perf_counter() - t0
    # every cluster is pure, and the 40 characters are found (a few may split)
    for k in range(len(res.sizes)):
        assert len(set(who[res.labels == k])) == 1
    assert 40 <= len(res.sizes) <= 60
    print(f"4000 tracks clustered in {elapsed:.1f} s")


def reference_cluster(x, groups, t0, metric="l2"):
    """The paper's algorithm written as plainly as possible (dense matrix, O(N^3)): the fast one
    must give the same partition."""
    from index.cast_clustering import distances
    n = len(x)
    clusters = {i: {"m": x[i].astype(float), "t": float(t0), "members": [i], "shots": {groups[i]}} for i in range(n)}
    refused = set()
    while True:
        best = None
        ids = sorted(clusters)
        for ai, a in enumerate(ids):
            for b in ids[ai + 1:]:
                if (a, b) in refused or clusters[a]["shots"] & clusters[b]["shots"]:
                    continue
                d = float(distances(metric, clusters[a]["m"], clusters[b]["m"][None])[0])
                if best is None or d < best[0]:
                    best = (d, a, b)
        if best is None:
            break
        d, a, b = best
        A, B = clusters[a], clusters[b]
        if d > min(A["t"], B["t"]):
            refused.add((a, b))
            continue
        na, nb = len(A["members"]), len(B["members"])
        A["m"] = (A["m"] * na + B["m"] * nb) / (na + nb)
        A["t"] = merged_threshold(A["t"], B["t"], d)
        A["members"] += B["members"]
        A["shots"] |= B["shots"]
        del clusters[b]
        refused = {p for p in refused if a not in p}     # a changed: its pairs are looked at again
    return sorted(sorted(c["members"]) for c in clusters.values())


@pytest.mark.parametrize("seed", range(6))
def test_fast_algorithm_matches_the_plain_one(seed):
    rng = np.random.default_rng(seed)
    centres = np.stack([unit(rng.normal(size=8)) for _ in range(4)])
    who = rng.integers(0, 4, 40)
    x = centres[who] + rng.normal(0, 0.15, (40, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    groups = list(rng.integers(0, 15, 40))          # shots: some tracks share one (cannot-link)
    res = cluster(x, groups, 0.6)
    fast = sorted(sorted(np.flatnonzero(res.labels == k).tolist()) for k in range(len(res.sizes)))
    assert fast == reference_cluster(x, groups, 0.6)
