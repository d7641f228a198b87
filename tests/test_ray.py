"""Ingest across a real Ray cluster (`ray start --head` on 127.0.0.1, started here and stopped after):
the shards the workers write are searched with exactly the ranking one index over the same videos
gives, and a worker killed mid-film is restarted by Ray and the film resumes, every shot once."""

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DEV, ROOT, assert_clean_error, clip

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'castfinder[ray]'); CI installs it")
SOURCES = ["friends", "herapheri"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster with 2 CPUs and token authentication, as `ray start` makes one."""
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="cfray", dir="/tmp")  # Ray's unix socket paths must stay short
    log = open(Path(temp) / "ray_start.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp,
                             "--object-store-memory", str(100 << 20)],
                            env={**os.environ, **auth, "CASTFINDER_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)  # this process is a driver too
    try:
        deadline = time.time() + 90
        while True:  # the GCS answers on its port once the head is up
            assert proc.poll() is None, (Path(temp) / "ray_start.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "ray start did not come up in 90 s"
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()  # `ray start --block` stops the node's processes when it ends
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture started
            proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def config():
    from castfinder.core.config import load_config
    return load_config("default")


@pytest.fixture(scope="module")
def single_index(tmp_path_factory, models, config):
    """friends then herapheri in one ordinary index (videos 1 and 2), as one process ingests them."""
    from castfinder.index.store import IndexStore
    from castfinder.stream.pipeline import IngestJob
    path = tmp_path_factory.mktemp("single")
    store = IndexStore(path, writable=True)
    for name in SOURCES:
        IngestJob(str(clip(name)), store, config.ingest, models, cast=config.cast).run()
    store.close()
    return path


@pytest.fixture(scope="module")
def sharded_index(tmp_path_factory, cluster, config):
    from castfinder.ray_ingest import ingest_on_ray
    path = tmp_path_factory.mktemp("sharded")
    doc = ingest_on_ray([str(clip(n)) for n in SOURCES], path, config, address=cluster, workers=2, threads=1)
    return path, doc


def video_snapshot(path, video: int) -> dict:
    """What an ingest made of a video: counts, shot spans and the frames kept (shot, frame, faces)."""
    from castfinder.index.shards import open_store
    store = open_store(path).for_video(video)
    cat = store.catalogue
    shots = [(s["idx"], round(s["start_s"], 3), round(s["end_s"], 3), bool(s["closed"]), s["n_frames"], s["n_faces"])
             for s in cat.shots(video)]
    frames = [tuple(r) for r in cat.conn.execute(
        "SELECT shot_idx, frame_idx, n_faces FROM frames WHERE video_id=? ORDER BY frame_idx", (video,))]
    return {"status": cat.video(video)["status"], "counts": cat.counts(video), "shots": shots, "frames": frames}


def assert_faiss_exact(path) -> None:
    """Each shard's FAISS index holds every catalogue vector once (nothing lost, nothing doubled)."""
    from castfinder.index.shards import ShardedStore
    from castfinder.index.vector_store import _ids_of
    for shard in ShardedStore(path).stores():
        for feature in shard.indexed_features():
            index = shard.feature(feature)
            ids = _ids_of(index.index)
            rows, _ = shard.catalogue.feature_stats(feature)
            assert index.ntotal == len(np.unique(ids)) == rows, (shard.dir.name, feature, index.ntotal, rows)


def same_clusters(doc: dict) -> dict:
    """A query answer with cluster ids (which name their shard in a sharded index) numbered in the order
    the answer first names them: the rest must be equal as it is."""
    seen: dict[str, str] = {}

    def label(name: str) -> str:
        return seen.setdefault(name, f"cluster:#{len(seen)}") if name.startswith("cluster:") else name
    doc = json.loads(json.dumps(doc))
    for q in doc["queries"]:
        q["photo"] = label(q["photo"])
    for r in doc["results"]:
        r["photos"] = [label(p) for p in r["photos"]]
    return doc


def _photos(clip_name: str, character: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((DEV / clip_name / "refs" / character).iterdir())]


@needs_ray
def test_sharded_index_ranks_exactly_as_one_index(single_index, sharded_index):
    import castfinder
    path, doc = sharded_index
    assert not doc["failed"], doc["failed"]
    assert sorted(v["video"] for v in doc["videos"]) == [1, 2]          # numbered by the job, in source order
    assert {v["shard"] for v in doc["videos"]} == {"s001", "s002"}      # two workers, a shard each
    assert sorted(p.name for p in (path / "shards").iterdir()) == ["s001", "s002"]
    assert_faiss_exact(path)
    ross, raju = _photos("friends", "Ross"), _photos("herapheri", "Raju")
    keys = ("id", "name", "status", "duration_s", "indexed_until_s", "shots", "frames", "faces", "vectors")
    with castfinder.open_index(single_index) as one, castfinder.open_index(path) as shards:
        assert [{k: v[k] for k in keys} for v in shards.videos()] == [{k: v[k] for k in keys} for v in one.videos()]
        for video in (1, 2):
            assert shards.shots(video) == one.shots(video)
        # each video's batch clusters: built by its worker when it finished the video, by one index on the
        # first look at its cast (this one)
        def shape(docs):
            return [(d["video"], sorted((tuple(c["shots"]), c["tracks"]) for c in d["clusters"])) for d in docs]
        assert shape(shards.cast(sheets=False)) == shape(one.cast(sheets=False))
        asked = [dict(photos=ross), dict(photos=raju, fusion="rrf", limit=0), dict(photos=ross + raju, fusion="frequency"),
                 dict(photos=raju, video=2, top_k=50), dict(photos=ross[:1], expand=True, limit=0)]
        for kw in asked:
            expected = one.query(**kw)
            assert expected["results"], kw
            assert same_clusters(shards.query(**kw)) == same_clusters(expected), {k: v for k, v in kw.items() if k != "photos"}
        both = shards.query(ross + raju, limit=0)["results"]
        assert {r["video"] for r in both} == {1, 2}                      # hits from both shards, one ranking
        thumbs = shards.query(ross, limit=3, thumbnails=path.parent / "thumbs")
        assert len(list((path.parent / "thumbs").glob("*.jpg"))) == len(thumbs["results"]) == 3
        # written by the job's workers only: a writer is refused as a busy index is (the service then serves
        # searches), and the CLI exits 2
        with pytest.raises(castfinder.IndexBusyError, match="sharded index"):
            shards.ingest(clip("friends"))
    with pytest.raises(castfinder.IndexBusyError, match="sharded index"):
        castfinder.open_index(path, writable=True)


@needs_ray
def test_worker_killed_mid_film_is_restarted_and_the_film_resumes(cluster, single_index, tmp_path):
    """The CLI's job, its worker process killed (SIGKILL) inside the film: Ray restarts the worker, the
    film resumes in the same shard, and the index equals a clean ingest, every shot once."""
    shard = tmp_path / "idx" / "shards" / "s001"
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", "--ray", cluster, str(clip("friends")),
                             "--index", str(tmp_path / "idx"), "--ray-workers", "1", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.time() + 240
    from castfinder.index.store import IndexStore
    while killed is None:
        assert proc.poll() is None and time.time() < deadline, "the job ended before its worker could be killed"
        time.sleep(0.05)
        try:
            cat = IndexStore(shard).catalogue
            row = cat.video(1)
            closed = cat.counts(1)["shots"] if row is not None else 0
        except Exception:  # the shard is being made
            continue
        if closed >= 2:  # inside shot 2 (4.9-7.7 s) or the long shot 3: mid-film
            assert row["status"] == "ingesting"
            killed = int((shard / ".writer.lock").read_text())  # the worker holding the shard's writer lock
            os.kill(killed, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert not doc["failed"] and len(doc["videos"]) == 1, doc
    assert doc["videos"][0]["pid"] != killed                         # a new worker process finished it
    assert doc["videos"][0]["start_s"] > 0                           # it resumed, not started over
    assert "real time across the cluster" in err                     # the job's progress on stderr
    assert video_snapshot(tmp_path / "idx", 1) == video_snapshot(single_index, 1)
    assert_faiss_exact(tmp_path / "idx")


def test_without_ray_the_cli_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from castfinder.cli import main; "  # import ray fails
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "ingest", "--ray", "auto", str(clip("friends")),
                        "--index", str(tmp_path / "idx")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_clean_error(r, "pip install 'castfinder[ray]'", code=2)
    assert not (tmp_path / "idx").exists()


def test_ray_refuses_an_ordinary_index_and_a_source_where_the_address_goes(friends_index, tmp_path):
    from conftest import run_cli
    r = run_cli("ingest", "--ray", "local", clip("friends"), "--index", friends_index[0])
    if HAS_RAY:
        assert_clean_error(r, "ordinary", code=2)
    r = run_cli("ingest", "--ray", clip("friends"), "--index", tmp_path)
    assert_clean_error(r, "not a Ray address", code=2)


PIN = """
import json, os, sys, time
from castfinder.ray_ingest import pin_to_cores
cores = pin_to_cores(1)
print(json.dumps({"cores": cores, "affinity": sorted(os.sched_getaffinity(0))}), flush=True)
time.sleep(float(sys.argv[1]))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning two workers needs two cores")
def test_pinned_workers_take_cores_of_their_own_and_free_them_when_they_die(tmp_path):
    """--ray-pin: each worker process holds one slot (flock) of its node and only its cores; a worker
    killed with SIGKILL frees its slot for the next one."""
    env = {**os.environ, "CASTFINDER_CORE_SLOTS": str(tmp_path / "slots")}

    def start(hold_s):
        return subprocess.Popen([sys.executable, "-c", PIN, str(hold_s)], env=env, stdout=subprocess.PIPE, text=True)

    a, b = start(60), start(60)
    got = [json.loads(p.stdout.readline()) for p in (a, b)]
    try:
        assert all(g["cores"] and g["affinity"] == g["cores"] for g in got), got
        assert got[0]["cores"] != got[1]["cores"], got
        a.send_signal(signal.SIGKILL)
        a.wait()
        c = start(0)
        again = json.loads(c.stdout.readline())
        c.wait()
        assert again["cores"] == got[0]["cores"], (got, again)  # the dead worker's slot, not b's
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
