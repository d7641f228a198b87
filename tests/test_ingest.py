"""End-to-end ingest on a real clip: catalogue and FAISS agree, re-runs reuse, kills resume cleanly."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from castfinder.index.store import IndexStore

from conftest import ROOT, clip, run_cli, truth


def check_consistent(path, video_id=1):
    store = IndexStore(path)
    cat = store.catalogue
    counts = cat.counts(video_id)
    total = 0
    for feature in store.indexed_features():
        n, _ = cat.feature_stats(feature)
        assert store.feature(feature).ntotal == n
        total += n
    dup = cat.conn.execute("SELECT frame_idx, COUNT(*) c FROM frames WHERE video_id=? GROUP BY frame_idx HAVING c>1",
                           (video_id,)).fetchall()
    assert not dup, f"duplicated frames: {dup[:5]}"
    return counts, total


def test_friends_ingest_matches_truth(friends_index):
    path, result = friends_index
    assert result.status == "done"
    assert result.shots == len(truth("friends")["shots"])
    assert result.faces > 50 and result.frames >= result.shots
    assert result.frames_dropped > 0 and result.frames_sampled == result.frames + result.frames_dropped
    counts, total = check_consistent(path)
    assert counts["vectors"] == total == result.vectors
    store = IndexStore(path)
    shots = store.catalogue.shots(1)
    true = truth("friends")["shots"]
    for ours, theirs in zip(shots, true):
        assert abs(ours["start_s"] - theirs["start_s"]) < 0.1
        assert ours["n_frames"] >= 1  # no shot loses all its frames to dedup
    # sampled at 5 fps: about 5 kept or dropped frames a second
    assert 0.8 * 5 * 14.9 <= result.frames_sampled <= 1.2 * 5 * 14.9


def test_search_finds_own_frames(friends_index):
    path, _ = friends_index
    store = IndexStore(path)
    index = store.feature("effnet-lite0")
    ids, vecs = next(store.catalogue.vectors_after("effnet-lite0", -1))
    scores, found = index.search(vecs[:5], 3)
    assert (found[:, 0] == ids[:5]).all() and np.allclose(scores[:, 0], 1.0, atol=1e-4)


def test_rerun_reuses_and_force_rebuilds(tmp_path):
    src = clip("herapheri")
    first = run_cli("ingest", src, "--index", tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli("ingest", src, "--index", tmp_path)
    assert again.returncode == 0 and "already indexed" in again.stdout
    counts_before, _ = check_consistent(tmp_path)
    forced = run_cli("ingest", src, "--index", tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    store = IndexStore(tmp_path)
    assert len(store.catalogue.videos()) == 1
    vid = store.catalogue.videos()[0]["id"]
    counts_after, _ = check_consistent(tmp_path, vid)
    assert counts_after == counts_before


def test_kill_9_mid_ingest_then_resume(tmp_path):
    src = clip("testvideo")  # 60 s, 23 shots: long enough to kill in the middle
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", str(src), "--index", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "catalogue.sqlite"
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists():
            store = IndexStore(tmp_path)
            rows = store.catalogue.videos()
            if rows and store.catalogue.counts(rows[0]["id"])["shots"] >= 4:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = IndexStore(tmp_path)  # opens after a kill
    assert store.catalogue.videos()[0]["status"] == "ingesting"
    resumed = run_cli("ingest", src, "--index", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    counts, total = check_consistent(tmp_path)
    assert counts["vectors"] == total
    shots = IndexStore(tmp_path).catalogue.shots(1)
    assert [s["idx"] for s in shots] == list(range(len(shots)))
    assert all(s["closed"] for s in shots)
    for a, b in zip(shots, shots[1:]):
        assert abs(a["end_s"] - b["start_s"]) < 0.1  # no gap or overlap where it resumed
    assert shots[-1]["end_s"] > 59


def test_batches_span_cuts_without_mixing_up_shots(friends_index, tmp_path, models, ingest_cfg):
    """Batches of 16 (a GPU's size) run across cuts; every frame still lands in its own shot."""
    import dataclasses

    from castfinder.stream import metrics as M
    from castfinder.stream.pipeline import IngestJob

    def detect_batches():
        for metric in M.STAGE_BATCH.collect():
            return next(s.value for s in metric.samples if s.name.endswith("_count") and s.labels["stage"] == "detect")

    before = detect_batches()
    store = IndexStore(tmp_path, writable=True)
    cfg = dataclasses.replace(ingest_cfg, batch_size=16, queue_size=2, batch_timeout_file_s=60)  # full batches only
    result = IngestJob(str(clip("friends")), store, cfg, models).run()
    batches = detect_batches() - before
    # 45 frames in 4 shots: 3 batches when they run across cuts, at least 4 when every cut ends one
    assert batches == -(-result.frames // 16) < result.shots, (batches, result.frames, result.shots)

    def frames(cat):
        return cat.conn.execute("SELECT shot_idx, frame_idx, time_s FROM frames ORDER BY frame_idx").fetchall()

    reference = IndexStore(friends_index[0]).catalogue
    assert [tuple(r) for r in frames(store.catalogue)] == [tuple(r) for r in frames(reference)]
    shots = {s["idx"]: s for s in store.catalogue.shots(result.video_id)}
    assert all(s["closed"] for s in shots.values()) and len(shots) == result.shots
    for shot_idx, _, t in frames(store.catalogue):
        assert shots[shot_idx]["start_s"] - 1e-6 <= t < shots[shot_idx]["end_s"]
    assert abs(result.faces - friends_index[1].faces) <= 2
    check_consistent(tmp_path)
    store.close()


def test_frame_vectors_come_at_their_own_rate(friends_index):
    """Faces are read on every kept frame; whole-frame vectors only on the first kept frame of a shot and
    then at most one per 1/frame_vector_fps seconds (the default 1 per second)."""
    from castfinder.core.config import load_config
    fps = load_config("default").ingest.frame_vector_fps
    path, result = friends_index
    c = IndexStore(path).catalogue.conn
    for shot in IndexStore(path).catalogue.shots(1):
        frames = c.execute("SELECT id, time_s FROM frames WHERE video_id=1 AND shot_idx=? ORDER BY time_s",
                           (shot["idx"],)).fetchall()
        with_vec = [r[0] for r in c.execute(
            "SELECT f.time_s FROM vectors v JOIN frames f ON f.id=v.frame_id WHERE v.feature='effnet-lite0'"
            " AND f.video_id=1 AND f.shot_idx=? ORDER BY f.time_s", (shot["idx"],))]
        assert with_vec and with_vec[0] == frames[0][1]                     # the shot's first kept frame
        # at most one in each 1/fps slot of the shot's grid (the slots start at its first kept frame)
        slots = [int((t - with_vec[0]) * fps + 1e-6) for t in with_vec]
        assert slots == sorted(set(slots)), slots
        assert len(with_vec) <= (shot["end_s"] - shot["start_s"]) * fps + 1
    n_faces = c.execute("SELECT COUNT(*) FROM vectors WHERE feature='dlib-resnet'").fetchone()[0]
    assert n_faces == result.faces  # every face of every kept frame has its vector
