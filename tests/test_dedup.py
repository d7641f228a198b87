"""Near-duplicate removal: consecutive similarity (online) and DBSCAN per shot (method 2)."""

import dataclasses

import numpy as np

from castfinder.index.store import IndexStore
from castfinder.stream.dedup import ConsecutiveDeduplicator, dbscan_keep
from castfinder.stream.pipeline import IngestJob

from conftest import clip


def test_consecutive_drops_repeats_but_keeps_first_of_each_shot():
    d = ConsecutiveDeduplicator(0.985)
    still = np.full((88, 160, 3), 100, np.uint8)
    other = np.full((88, 160, 3), 200, np.uint8)
    assert d.keep(0, still) and not d.keep(0, still) and not d.keep(0, still.copy())
    assert d.keep(0, other)
    assert d.keep(1, other)  # a new shot always keeps its first frame
    assert d.dropped == 2
    assert ConsecutiveDeduplicator(enabled=False).keep(0, still)


def test_a_still_shot_keeps_a_frame_every_max_gap():
    d = ConsecutiveDeduplicator(0.985, max_gap_s=1.0)
    still = np.full((88, 160, 3), 100, np.uint8)
    kept = [t / 5 for t in range(16) if d.keep(0, still, t / 5)]
    assert kept == [0.0, 1.0, 2.0, 3.0]
    assert d.keep(1, still, 3.2) and not d.keep(1, still, 3.4)  # the gap restarts with each shot


def test_dbscan_keeps_best_face_per_cluster():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    vecs = np.stack([a, a + 0.01, b, b + 0.02, a - 0.01]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    kept = dbscan_keep(vecs, np.array([0.5, 0.9, 0.4, 0.3, 0.1]), eps=0.1)
    assert kept.tolist() == [1, 2]


def test_dbscan_ingest_keeps_fewer_frames_and_every_shot(tmp_path, models, ingest_cfg):
    results = {}
    for method in ("none", "dbscan"):
        cfg = dataclasses.replace(ingest_cfg, dedup=method)
        store = IndexStore(tmp_path / method, writable=True)
        results[method] = IngestJob(str(clip("herapheri")), store, cfg, models).run()
        shots = store.catalogue.shots(results[method].video_id)
        store.close()
        assert all(s["n_frames"] >= 1 for s in shots)
    print({m: (r.frames, r.frames_dropped) for m, r in results.items()})
    assert results["dbscan"].frames < results["none"].frames
    assert results["none"].frames_dropped == 0 and results["dbscan"].frames_dropped > 0
