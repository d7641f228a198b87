"""Several sources in one process on shared detect/embed stages (`castfinder ingest A B C`,
stream/shared_stages.py): each video comes out as it does when ingested alone, the index answers
queries while they run, and a source that is bad, fails mid-run or stalls holds nobody else up."""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from castfinder.core.errors import CastfinderError
from castfinder.index.store import IndexStore

from conftest import DEV, ROOT, clip, serve_http

CLIPS = ["friends", "herapheri", "avenger2"]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """The default preset with whole batches only (no batch timeout), so a source's batches are cut
    the same way however busy the machine is: the small-face plan follows the batches."""
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    data["name"] = "whole-batches"
    data["ingest"]["batch_timeout_file_s"] = 60
    path = tmp_path_factory.mktemp("preset") / "whole-batches.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def cfg(preset):
    from castfinder.core.config import load_config
    return load_config(str(preset))


@pytest.fixture(scope="module")
def alone(tmp_path_factory, cfg, models):
    """Each clip ingested on its own (the usual single-source pipeline), one index each."""
    from castfinder.stream.pipeline import IngestJob
    out = {}
    for name in CLIPS:
        path = tmp_path_factory.mktemp(f"alone_{name}")
        store = IndexStore(path, writable=True)
        IngestJob(str(clip(name)), store, cfg.ingest, models).run()
        store.close()
        out[name] = path
    return out


@pytest.fixture(scope="module")
def together(tmp_path_factory, preset):
    """`castfinder ingest friends herapheri avenger2 NOT-A-VIDEO --json` in one process, queried by
    this one (a reader of the same index) while it runs."""
    import castfinder

    tmp = tmp_path_factory.mktemp("together")
    bad = tmp / "notes.mp4"
    bad.write_text("not a video at all\n")
    index = tmp / "index"
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", *[clip(n) for n in CLIPS], bad,
                             "--index", index, "--config", preset, "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    photos = sorted((DEV / "friends" / "refs" / "Ross").iterdir())[:2]
    answered_mid_run, errors = [], []
    deadline = time.time() + 300
    idx = None
    try:
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
            try:
                if idx is None:
                    if not (index / "catalogue.sqlite").exists():
                        continue
                    idx = castfinder.open_index(index, str(preset), writable=False)
                doc = idx.query(photos)
                running = [v["id"] for v in idx.videos() if v["status"] == "ingesting"]
            except CastfinderError as exc:  # before the first vector: nothing indexed yet
                errors.append(str(exc))
                continue
            if doc["results"] and running and proc.poll() is None:
                answered_mid_run.append((doc, running))
        out, err = proc.communicate(timeout=max(1, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
        if idx is not None:
            idx.close()
    return {"index": index, "bad": bad, "returncode": proc.returncode, "out": out, "err": err,
            "answered_mid_run": answered_mid_run, "query_errors": errors}


def video_content(path, source: str):
    """Everything an ingest wrote for one video, in stream order: shots, frames, faces, vectors."""
    store = IndexStore(path)
    conn = store.catalogue.conn
    row = conn.execute("SELECT * FROM videos WHERE source=?", (str(source),)).fetchone()
    assert row is not None, f"{source} not in {path}"
    vid = row["id"]
    shots = [tuple(r) for r in conn.execute(
        "SELECT idx, start_frame, end_frame, start_s, end_s, closed FROM shots WHERE video_id=? ORDER BY idx", (vid,))]
    frames = [tuple(r) for r in conn.execute(
        "SELECT shot_idx, frame_idx, time_s, n_faces FROM frames WHERE video_id=? ORDER BY frame_idx", (vid,))]
    faces = np.array([tuple(r) for r in conn.execute(
        "SELECT f.frame_idx, x.x1, x.y1, x.x2, x.y2, x.prob FROM faces x JOIN frames f ON f.id = x.frame_id "
        "WHERE f.video_id=? ORDER BY f.frame_idx, x.id", (vid,))])
    vectors = conn.execute("SELECT f.frame_idx, v.feature, v.face_id IS NULL, v.vec FROM vectors v "
                           "JOIN frames f ON f.id = v.frame_id WHERE v.video_id=? ORDER BY f.frame_idx, v.feature, v.id",
                           (vid,)).fetchall()
    keys = [tuple(r)[:3] for r in vectors]
    vecs = [np.frombuffer(r[3], np.float32) for r in vectors]
    # FAISS holds every vector of the catalogue (searchable), once
    for feature in store.indexed_features():
        n, _ = store.catalogue.feature_stats(feature)
        assert store.feature(feature).ntotal == n
    return row, shots, frames, faces, keys, vecs


def test_each_source_gives_what_it_gives_alone(together, alone):
    doc = json.loads(together["out"])
    by_source = {d["source"]: d for d in doc["sources"]}
    for name in CLIPS:
        assert by_source[str(clip(name))]["status"] == "done", by_source[str(clip(name))]
        row, shots, frames, faces, keys, vecs = video_content(together["index"], clip(name))
        row1, shots1, frames1, faces1, keys1, vecs1 = video_content(alone[name], clip(name))
        assert row["status"] == row1["status"] == "done"
        assert shots == shots1, name
        assert frames == frames1, name
        assert faces.shape == faces1.shape and np.allclose(faces, faces1, atol=1e-3), name
        assert keys == keys1, name
        assert max(float(np.abs(a - b).max()) for a, b in zip(vecs, vecs1)) < 1e-5, name
        assert len(shots) >= 3 and len(faces) > 50 and len(vecs) > 100


def test_queries_are_answered_while_sources_ingest(together):
    assert together["answered_mid_run"], (together["query_errors"][-3:], together["err"][-2000:])
    doc, running = together["answered_mid_run"][0]
    assert running and doc["results"][0]["score"] > 0


def test_a_bad_source_fails_alone_and_the_others_finish(together):
    doc = json.loads(together["out"])
    failed = [d for d in doc["sources"] if d["status"] == "failed"]
    assert [d["source"] for d in failed] == [str(together["bad"])] and doc["failed"] == 1
    assert "not a video file" in failed[0]["error"] and failed[0]["video"] is None
    assert together["returncode"] == 2
    err = together["err"].strip().splitlines()
    assert "Traceback" not in together["err"] and err[-1].startswith("castfinder: error:") and "notes.mp4" in err[-1]
    assert sum(d["status"] == "done" for d in doc["sources"]) == len(CLIPS)


# --- a source failing mid-run, and a live source that stalls, beside a file ----------------------------
def stalling_stream(seconds: float = 8.0) -> bytes:
    """An MPEG-TS stream of a small synthetic video (what a camera or a broadcast sends)."""
    import av
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (15, 20, 3), dtype=np.uint8)
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("mpeg2video", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * 10)):
            img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


class StallingServer:
    """HTTP on 127.0.0.1 that sends a few seconds of a live stream, then sends nothing (connection
    held open) until release() — a camera that froze."""

    def __init__(self, payload: bytes):
        self.release_event = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                owner.release_event.wait(120)

            def log_message(self, *args):
                pass

        self.httpd, base = serve_http(Handler)
        self.url = f"{base}/live.ts"

    def release(self):
        self.release_event.set()
        self.httpd.shutdown()


def test_a_failing_and_a_stalled_source_hold_nobody_up(tmp_path, cfg, models, alone):
    from castfinder.stream.pipeline import IngestJob
    from castfinder.stream.shared_stages import SharedStages

    server = StallingServer(stalling_stream())
    store = IndexStore(tmp_path / "idx", writable=True)
    stages = SharedStages(models, cfg.ingest)
    live = IngestJob(server.url, store, cfg.ingest, models)
    failing = IngestJob(str(clip("herapheri")), store, cfg.ingest, models)
    steady = IngestJob(str(clip("friends")), store, cfg.ingest, models)
    assert live.info.is_live

    real_frames = failing.decoder.frames

    def frames_then_reset(start_s=0.0):  # the network drops mid-film
        for n, frame in enumerate(real_frames(start_s)):
            if n == 60:
                raise ConnectionResetError("connection reset by peer")
            yield frame
    failing.decoder.frames = frames_then_reset

    outcome = {}

    def run(job):
        try:
            outcome[job] = job.run(stages=stages)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome[job] = exc

    threads = {job: threading.Thread(target=run, args=(job,), daemon=True) for job in (live, failing, steady)}
    try:
        for t in threads.values():
            t.start()
        threads[steady].join(120)
        assert not threads[steady].is_alive(), "the file waited for the stalled live source"
        threads[failing].join(60)
        assert not threads[failing].is_alive()
        # the live source sent its 8 s (80 frames) at once, then froze while the file ran to its end (it
        # may have given up waiting by now: its read timeout is 10 s)
        assert live.decoder.stats.frames >= 70
    finally:
        live.stop()
        server.release()
        for t in threads.values():
            t.join(60)
        stages.close()
        store.close()
    assert not any(t.is_alive() for t in threads.values())

    result = outcome[steady]
    assert not isinstance(result, BaseException), result
    assert result.status == "done"
    _, shots, frames, faces, keys, vecs = video_content(tmp_path / "idx", clip("friends"))
    _, shots1, frames1, faces1, keys1, _ = video_content(alone["friends"], clip("friends"))
    assert (shots, frames, keys) == (shots1, frames1, keys1) and faces.shape == faces1.shape

    error = outcome[failing]
    assert isinstance(error, RuntimeError) and "connection reset" in str(error)
    row = IndexStore(tmp_path / "idx").catalogue.video(failing.video_id)
    assert row["status"] == "failed" and "connection reset" in row["error"]

    stopped = outcome[live]
    assert not isinstance(stopped, BaseException), stopped
    assert stopped.status in ("stopped", "done") and stopped.shots >= 1  # what came before the freeze is indexed


def test_a_source_slow_to_open_delays_none_after_it(tmp_path, preset):
    """A URL whose server answers only once the file listed after it has started (or after 20 s): the
    sources open at once, so the file starts while the URL is still opening. One after another, the
    file would wait for the URL's 10-s open timeout."""
    import castfinder

    released, answered = threading.Event(), []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            released.wait(20)
            answered.append(time.monotonic())
            self.send_error(404)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    httpd, base = serve_http(Slow)
    idx = castfinder.open_index(tmp_path / "index", str(preset), url_prefixes=[base + "/"])
    started = {}
    real_start = idx.start_ingest

    def start_ingest(source, **kw):  # the real call, timed
        run = real_start(source, **kw)
        started[source] = time.monotonic()
        if source == str(clip("herapheri")):
            released.set()
        return run

    idx.start_ingest = start_ingest
    try:
        runs = idx.start_ingest_many([base + "/slow.mp4", clip("herapheri")])
        slow, steady = runs
        with pytest.raises(CastfinderError, match="404|not found|Not Found"):
            slow.wait()
        assert steady.wait(300)["status"] == "done"
    finally:
        released.set()
        idx.close()
        httpd.shutdown()
        httpd.server_close()
    assert answered and started[str(clip("herapheri"))] < answered[0], "the file waited for the URL to open"


# --- the GPU paths fall back to the CPU cleanly where there is no GPU ------------------------------
def test_gpu_decoding_falls_back_to_the_cpu(monkeypatch):
    from av.codec.hwaccel import HWAccel

    from castfinder.stream import gpu_decode
    from castfinder.stream.decode import VideoDecoder

    plain = VideoDecoder(str(clip("friends")))
    times = [f.time_s for f in plain.frames()]
    plain.close()
    if gpu_decode.cuda_present():
        pytest.skip("a CUDA GPU is here: the fallback is what this test checks")
    assert gpu_decode.cuda_hwaccel() is None and not plain.on_gpu
    # asked for NVDEC anyway (as on a GPU machine): opening for it fails here, and the CPU takes over
    monkeypatch.setattr(gpu_decode, "cuda_hwaccel", lambda device=None: HWAccel("cuda", allow_software_fallback=True))
    forced = VideoDecoder(str(clip("friends")))
    assert not forced.on_gpu and [f.time_s for f in forced.frames()] == times
    forced.close()


def test_faiss_searches_on_the_cpu_without_a_gpu_build(tmp_path):
    import faiss

    from castfinder.index import gpu_faiss
    from castfinder.index.vector_store import FeatureIndex

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a faiss GPU build and a GPU are here")
    assert gpu_faiss.gpu_resources() is None
    index = FeatureIndex(tmp_path / "f.index", 8, "flat")
    assert index._gpu is None
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((50, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index.add(np.arange(50), vecs)
    _, ids = index.search(vecs[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2]


def test_shared_batch_size_is_checked(tmp_path):
    from castfinder.core.config import load_config
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  shared_batch_size: 0\n")
    with pytest.raises(CastfinderError, match="shared_batch_size"):
        load_config(str(bad))
    assert dataclasses.replace(load_config().ingest, shared_batch_size=16).shared_batch_size == 16


def test_the_service_runs_its_ingests_on_shared_stages(tmp_path, preset, alone):
    """Two videos POSTed to one server at once: model calls mix their frames (the server's metrics
    count calls with frames of 2 sources), and each video is what it is alone."""
    from service_helpers import Server

    srv = Server(tmp_path / "index", extra=("--config", preset))
    try:
        ids = {}
        for name in CLIPS[:2]:
            r = srv.client.post("/videos", json={"source": str(clip(name))})
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        for name, vid in ids.items():
            assert srv.wait_video(vid, timeout=300)["status"] == "done"
        metrics = srv.client.get("/metrics").text
    finally:
        log = srv.stop()
    assert "Traceback" not in log, log
    calls = {line.split('le="')[1].split('"')[0]: float(line.split()[-1])
             for line in metrics.splitlines() if line.startswith("castfinder_batch_sources_bucket")}
    assert calls and calls["+Inf"] > calls["1.0"], metrics[-3000:]  # some detector calls held both videos
    for name in CLIPS[:2]:
        row, shots, frames, faces, keys, vecs = video_content(tmp_path / "index", clip(name))
        row1, shots1, frames1, faces1, keys1, vecs1 = video_content(alone[name], clip(name))
        assert (shots, frames, keys) == (shots1, frames1, keys1), name
        assert faces.shape == faces1.shape and np.allclose(faces, faces1, atol=1e-3), name


def test_sources_are_named_by_the_shortest_path_tail_that_tells_them_apart():
    from castfinder.cli_many import short_names
    names = short_names([str(clip("friends")), str(clip("herapheri")), "rtsp://cam/live", "/films/a.mp4"])
    assert list(names.values()) == ["friends/video.mp4", "herapheri/video.mp4", "rtsp://cam/live", "a.mp4"]
