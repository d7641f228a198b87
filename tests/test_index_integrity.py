"""FAISS checkpoints hold exactly the catalogue's vectors (one entry per row, no repeats), and a
stopped or killed ingest resumes to exactly the index a clean ingest makes."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from castfinder.index.store import IndexStore
from castfinder.index.vector_store import FeatureIndex, _ids_of
from castfinder.stream.pipeline import IngestJob

from conftest import ROOT, clip, run_beside, run_cli


def faiss_entries(index: FeatureIndex) -> tuple[int, int]:
    """(entries, distinct ids) of a FAISS index."""
    ids = _ids_of(index.index)
    return int(index.ntotal), len(np.unique(ids))


def check_exact(path) -> dict:
    """Every feature's FAISS file holds one entry per catalogue row, and readers use it as it is
    (no rebuild). Returns {feature: rows}."""
    store = IndexStore(path)
    rows = {}
    for feature, dim in store.indexed_features().items():
        n, _ = store.catalogue.feature_stats(feature)
        on_disk = FeatureIndex(path / "faiss" / f"{feature}.index", dim, store.kind)
        assert on_disk.damage is None, on_disk.damage
        assert faiss_entries(on_disk) == (n, n), (feature, faiss_entries(on_disk), n)
        assert not (path / "faiss" / f"{feature}.json").exists()  # no sidecar that could disagree
        rows[feature] = n
    return rows


def reader_view(path) -> dict:
    """{feature: (FAISS entries, distinct ids, catalogue rows)} as a reader opens the index."""
    store = IndexStore(path)
    return {f: (*faiss_entries(store.feature(f)), store.catalogue.feature_stats(f)[0]) for f in store.indexed_features()}


def snapshot(path, video_id=1, exact=True) -> dict:
    """What an ingest made of a video: counts, shot spans, kept frames, and FAISS entries."""
    store = IndexStore(path)
    cat = store.catalogue
    shots = [(s["idx"], round(s["start_s"], 3), round(s["end_s"], 3), bool(s["closed"]), s["n_frames"], s["n_faces"])
             for s in cat.shots(video_id)]
    frames = [tuple(r) for r in cat.conn.execute(
        "SELECT shot_idx, frame_idx, n_faces FROM frames WHERE video_id=? ORDER BY frame_idx", (video_id,))]
    return {"status": cat.video(video_id)["status"], "counts": cat.counts(video_id), "shots": shots,
            "frames": frames, "faiss": check_exact(path) if exact else None}


def test_clean_ingest_leaves_one_faiss_entry_per_row(friends_index):
    path, result = friends_index
    rows = check_exact(path)
    # a face vector for every face (every kept frame is read for faces) + frame vectors on a shot's first kept
    # frame, then 1 a second (115 + 16 = 131 on friends)
    assert sum(rows.values()) == result.vectors
    assert rows["dlib-resnet"] == result.faces >= 100
    assert result.shots <= rows["effnet-lite0"] <= result.shots + result.indexed_until_s < result.frames
    # a reader opens the checkpoint without rebuilding it from the catalogue
    store = IndexStore(path)
    built = []
    original = FeatureIndex.__init__

    def spy(self, *a, load=True, **kw):
        original(self, *a, load=load, **kw)
        built.append(load)

    FeatureIndex.__init__ = spy
    try:
        for feature in rows:
            assert store.feature(feature).ntotal == rows[feature]
    finally:
        FeatureIndex.__init__ = original
    assert built == [True] * len(rows)  # loaded once each, never started over


def test_queries_during_ingest_keep_faiss_exact(tmp_path, models, ingest_cfg):
    """Searches (same process, and a reader store topping up from the catalogue) race the writer's
    first adds and every later one: no id is ever added twice."""
    store = IndexStore(tmp_path, writable=True)
    reader = None
    job = IngestJob(str(clip("friends")), store, ingest_cfg, models)
    done, errors = threading.Event(), []
    rng = np.random.default_rng(0)

    def searcher():
        nonlocal reader
        try:
            while not done.is_set():
                for feature, dim in list(store.indexed_features().items()):
                    store.feature(feature).search(rng.standard_normal((2, dim)).astype(np.float32), 50)
                    if reader is None and (tmp_path / "catalogue.sqlite").exists():
                        reader = IndexStore(tmp_path)
                    if reader is not None and feature in reader.indexed_features():
                        reader.feature(feature)
                        reader.refresh()
                time.sleep(0.001)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    result = run_beside(job, [searcher] * 3, done)
    assert not errors and result.status == "done"
    for feature in store.indexed_features():
        n, _ = store.catalogue.feature_stats(feature)
        assert faiss_entries(store.feature(feature)) == (n, n), feature   # the live index the service searches
        reader.refresh()
        assert faiss_entries(reader.feature(feature)) == (n, n), feature  # another process's view
    store.close()
    check_exact(tmp_path)


def _wait_for_closed_shots(path, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "ingest ended before it could be interrupted"
        if (path / "catalogue.sqlite").exists():
            try:
                cat = IndexStore(path).catalogue
                rows = cat.videos()
                if rows and cat.counts(rows[0]["id"])["shots"] >= n:
                    return
            except Exception:  # the writer is creating the catalogue right now
                pass
        time.sleep(0.1)
    raise AssertionError("ingest never got that far")


def _interrupt_and_resume(path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", str(clip("friends")), "--index", str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_closed_shots(path, 2, proc)  # inside shot 2 (4.9-7.7 s) or the long shot 3
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    first = snapshot(path, exact=sig == signal.SIGTERM)  # kill -9: the checkpoint may lag behind
    assert all(a == b == c for a, b, c in reader_view(path).values())  # topped up, nothing doubled
    assert first["status"] == ("stopped" if sig == signal.SIGTERM else "ingesting"), (first["status"], err)
    resumed = run_cli("ingest", clip("friends"), "--index", path)
    assert resumed.returncode == 0, resumed.stderr
    return first, snapshot(path)


def test_stop_then_resume_equals_clean_ingest(friends_index, tmp_path, models, ingest_cfg):
    """IngestJob.stop() (what the service does) in the middle of a shot, then resume."""
    clean = snapshot(friends_index[0])
    store = IndexStore(tmp_path, writable=True)
    job = IngestJob(str(clip("friends")), store, ingest_cfg, models)

    def stop_inside_shot_2():
        while job.indexed_until < 5.5:  # shot 2 runs 4.9-7.7 s
            time.sleep(0.01)
        job.stop()

    threading.Thread(target=stop_inside_shot_2, daemon=True).start()
    first = job.run()
    store.close()
    assert first.status == "stopped"
    stopped = snapshot(tmp_path)
    # the open shot was left open at the stop, not cut there: no false shot boundary
    assert stopped["shots"][-1][3] is False and all(s[3] for s in stopped["shots"][:-1])
    assert [s[:3] for s in stopped["shots"][:-1]] == [s[:3] for s in clean["shots"][:len(stopped["shots"]) - 1]]
    store = IndexStore(tmp_path, writable=True)
    again = IngestJob(str(clip("friends")), store, ingest_cfg, models).run()
    store.close()
    assert again.status == "done"
    assert snapshot(tmp_path) == clean


def test_sigterm_then_resume_equals_clean_ingest(friends_index, tmp_path):
    first, resumed = _interrupt_and_resume(tmp_path, signal.SIGTERM)
    assert not first["shots"][-1][3]  # the shot open at SIGTERM stays open
    assert resumed == snapshot(friends_index[0])


def test_kill_9_then_resume_equals_clean_ingest(friends_index, tmp_path):
    _, resumed = _interrupt_and_resume(tmp_path, signal.SIGKILL)
    assert resumed == snapshot(friends_index[0])


def test_old_checkpoint_with_repeated_ids_is_rebuilt(friends_index, tmp_path):
    """A checkpoint written before this fix (the same ids twice) is replaced, not trusted."""
    from conftest import copy_index
    dst = copy_index(friends_index[0], tmp_path)
    store = IndexStore(dst)
    ids, vecs = next(store.catalogue.vectors_after("effnet-lite0", -1))
    doubled = FeatureIndex(dst / "faiss" / "effnet-lite0.index", 1280, store.kind)
    doubled.index.add_with_ids(vecs[-2:], ids[-2:])  # what the back-fill + add did
    doubled.save()
    assert FeatureIndex(dst / "faiss" / "effnet-lite0.index", 1280, store.kind).damage == "2 repeated ids"
    assert faiss_entries(IndexStore(dst).feature("effnet-lite0")) == (len(ids), len(ids))
    writer = IndexStore(dst, writable=True)
    writer.feature("effnet-lite0")  # the writer saves the repaired checkpoint
    writer.close()
    check_exact(dst)
