"""The Ducros et al. agglomerative algorithm on small hand-made sets where the answer is known."""

import math

import numpy as np
import pytest

from castfinder.index.cast_clustering import cluster, join, merged_threshold


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
    from castfinder.index.cast_clustering import distances
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


# --- FINCH with cannot-link constraints (index/finch.py) -----------------------------------------

from castfinder.index.finch import cosine_matrix, finch  # noqa: E402


def _groups_ok(labels, groups):
    seen = {}
    for lab, g in zip(labels, groups):
        if (lab, g) in seen:
            return False
        seen[(lab, g)] = True
    return True


def test_finch_first_neighbours_find_two_characters():
    rng = np.random.default_rng(1)
    a, b = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    vecs = np.stack([unit(a + rng.normal(0, 0.05, 16)) for _ in range(6)] + [unit(b + rng.normal(0, 0.05, 16)) for _ in range(5)])
    res = finch(vecs, groups=range(11), gate=None)              # no constraint at all: plain FINCH, first partition
    assert res.level == 0 and not set(res.labels[:6]) & set(res.labels[6:]) and int(res.labels.max()) + 1 < 11
    # two tracks of one shot (one of a, one of b) tell the video how far apart two people are:
    # the gated hierarchy climbs, and still stops at two
    groups = list(range(11))
    groups[0] = groups[6] = "shot"
    res = finch(vecs, groups)
    assert list(res.labels) == [0] * 6 + [1] * 5 and res.typical is not None


def test_finch_never_joins_two_tracks_of_one_shot_even_when_identical():
    rng = np.random.default_rng(2)
    a = unit(rng.normal(size=16))
    vecs = np.stack([unit(a + rng.normal(0, 0.01, 16)) for _ in range(12)])
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 6]               # three "twins" in shot 0, three in shot 1
    for gate in ("cannot-link", None):
        res = finch(vecs, groups, gate=gate)
        assert _groups_ok(res.labels, groups) and all(_groups_ok(p, groups) for p in res.partitions)
        assert int(res.labels.max()) + 1 >= 3                       # at least one cluster per twin of shot 0


def test_finch_gate_stops_at_the_distance_of_known_different_people():
    """Three people: A twice alone and once beside B (so A and B are known to differ at distance
    d_ab); C is alone, farther from A than B is. C must not join A: it is farther than the
    nearest known-different person of A."""
    rng = np.random.default_rng(3)
    a = unit(rng.normal(size=32))
    b = unit(a + 0.9 * unit(rng.normal(size=32)))
    c = unit(a + 1.3 * unit(rng.normal(size=32)))
    vecs = np.stack([unit(a + rng.normal(0, 0.02, 32)) for _ in range(3)] + [b, c])
    groups = ["s1", "s2", "s3", "s3", "s4"]                      # track 2 (A) and track 3 (B) share shot s3
    res = finch(vecs, groups)
    assert res.labels[0] == res.labels[1] == res.labels[2]
    assert len({res.labels[0], res.labels[3], res.labels[4]}) == 3


def test_finch_coherence_stops_a_chain_of_look_alikes():
    """Twelve tracks on an arc, each a short step from the next (a blurred face near everyone), and
    two people seen together (the video's known-different distance). First-neighbour links would
    chain the arc into one catch-all; with the coherence bound every cluster's tracks average closer
    than 0.8x the typical known-different distance, and the two known people stay whole."""
    rng = np.random.default_rng(5)
    a, b = unit(rng.normal(size=64)), unit(rng.normal(size=64))
    arc = [unit(np.cos(t) * a + np.sin(t) * b) for t in np.linspace(0, 1.6, 12)]  # steps of ~0.01, mean pair ~0.22
    p, q = unit(rng.normal(size=64)), unit(rng.normal(size=64))
    p_tracks = [unit(p + rng.normal(0, 0.03, 64)) for _ in range(3)]
    q_tracks = [unit(p + 0.5 * unit(q - p) + rng.normal(0, 0.03, 64)) for _ in range(3)]  # q near p
    vecs = np.stack(arc + p_tracks + q_tracks)
    groups = [f"arc{i}" for i in range(12)] + ["s1", "s2", "s3", "s1", "s2", "s3"]  # p and q share shots
    chained = finch(vecs, groups, coherence=None)
    assert len(set(chained.labels[:12])) == 1                             # the catch-all
    res = finch(vecs, groups)
    assert len(set(res.labels[:12])) > 1
    d = cosine_matrix(vecs)
    for c in set(res.labels.tolist()):
        idx = np.flatnonzero(res.labels == c)
        if len(idx) > 1:
            assert d[np.ix_(idx, idx)][np.triu_indices(len(idx), 1)].mean() < 0.8 * res.typical
    assert len(set(res.labels[12:15])) == 1 and len(set(res.labels[15:])) == 1
    assert res.labels[12] != res.labels[15] and not set(res.labels[12:]) & set(res.labels[:12])


def test_finch_on_real_tracks_keeps_shots_apart(friends_index):
    """The friends clip's tracks (2-4 people a shot), raw and in the video's metric."""
    from castfinder.index import face_metric
    from castfinder.index.cast import Cast, CastParams
    from castfinder.index.store import IndexStore
    store = IndexStore(friends_index[0])
    try:
        cast = Cast.__new__(Cast)
        cast.store, cast.cat, cast.p = store, store.catalogue, CastParams()
        rows, vecs = cast.tracks(friends_index[1].video_id)
        shots = [r["shot_idx"] for r in rows]
        assert len(set(shots)) < len(shots)                          # several tracks share shots
        data = face_metric.video_pairs(store.catalogue, friends_index[1].video_id, "dlib-resnet")
        for space in (vecs, face_metric.fit(data.faces, data.cannot, "wccn").apply(vecs)):
            for gate in ("cannot-link", None):
                res = finch(space, shots, gate=gate)
                assert _groups_ok(res.labels, shots) and all(_groups_ok(p, shots) for p in res.partitions)
                assert 3 <= int(res.labels.max()) + 1 < len(shots)   # merges happen, not one blob
    finally:
        store.close()


def test_finch_thousands_of_tracks_are_fast():
    import time
    rng = np.random.default_rng(4)
    people = rng.normal(size=(60, 128))
    vecs = np.stack([unit(people[i % 60] + rng.normal(0, 0.4, 128)) for i in range(2000)])
    groups = [i // 3 for i in range(2000)]                          # three tracks a shot
    t0 = time.perf_counter()
    res = finch(vecs, groups)
    took = time.perf_counter() - t0
    print(f"FINCH on 2000 tracks: {took:.2f} s, {int(res.labels.max()) + 1} clusters, {len(res.partitions)} levels")
    assert _groups_ok(res.labels, groups) and took < 20
