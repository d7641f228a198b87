"""Searches while ingest adds vectors: FAISS add + search at once segfaults without the lock."""

import threading

import numpy as np

from castfinder.index.rwlock import RWLock
from castfinder.index.store import IndexStore
from castfinder.index.vector_store import FeatureIndex
from castfinder.stream.pipeline import IngestJob

from conftest import clip, copy_index, run_beside


def test_searches_during_ingest_never_crash_and_only_grow(tmp_path, models, ingest_cfg):
    store = IndexStore(tmp_path, writable=True)
    job = IngestJob(str(clip("avenger2")), store, ingest_cfg, models)
    rng = np.random.default_rng(0)
    query = rng.standard_normal((4, 1280)).astype(np.float32)
    seen = {i: [] for i in range(4)}
    errors = []
    done = threading.Event()

    def searcher(i):
        try:
            while not done.is_set():
                if "effnet-lite0" in store.features:
                    index = store.features["effnet-lite0"]
                    n = index.ntotal
                    scores, ids = index.search(query, 1000)
                    seen[i].append((n, int((ids >= 0).sum())))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    result = run_beside(job, [lambda i=i: searcher(i) for i in range(4)], done)
    store.close()
    assert not errors and result.status == "done"
    for i, obs in seen.items():
        assert obs, "searcher never ran"
        sizes = [n for n, _ in obs]
        assert sizes == sorted(sizes)  # results only grow
    assert max(len(o) for o in seen.values()) > 5


def test_rwlock_excludes_writers_from_readers():
    lock, state, bad = RWLock(), {"readers": 0, "writer": False}, []

    def reader():
        for _ in range(200):
            with lock.read():
                state["readers"] += 1
                if state["writer"]:
                    bad.append("read during write")
                state["readers"] -= 1

    def writer():
        for _ in range(200):
            with lock.write():
                state["writer"] = True
                if state["readers"]:
                    bad.append("write during read")
                state["writer"] = False

    ts = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def copy_of_index(friends_index, tmp_path):
    """A private copy of the friends index, and its effnet vector count, to damage safely."""
    dst = copy_index(friends_index[0], tmp_path)
    store = IndexStore(dst)
    return dst, store, store.feature("effnet-lite0").ntotal


def test_stale_faiss_file_is_reconciled_from_catalogue(friends_index, tmp_path):
    dst, store, full = copy_of_index(friends_index, tmp_path)
    # a FAISS file saved before the last vectors (as after kill -9) is topped up on open
    stale = FeatureIndex(dst / "faiss" / "effnet-lite0.index", 1280)
    stale.index.reset()
    stale.max_id = -1
    ids, vecs = next(store.catalogue.vectors_after("effnet-lite0", -1, batch=10))
    stale.add(ids, vecs)
    stale.save()
    assert IndexStore(dst).feature("effnet-lite0").ntotal == full


def test_faiss_file_ahead_of_catalogue_is_rebuilt(friends_index, tmp_path):
    dst, _, full = copy_of_index(friends_index, tmp_path)
    # vectors in the file that the catalogue never committed (ids past its last one) force a rebuild
    ahead = FeatureIndex(dst / "faiss" / "effnet-lite0.index", 1280)
    extra = np.random.default_rng(1).standard_normal((3, 1280)).astype(np.float32)
    ahead.add(np.array([10_000_000, 10_000_001, 10_000_002]), extra)
    ahead.save()
    rebuilt = IndexStore(dst).feature("effnet-lite0")
    assert rebuilt.ntotal == full
    _, ids = rebuilt.search(extra[:1], 5)
    assert (ids < 10_000_000).all()
