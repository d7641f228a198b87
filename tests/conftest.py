import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CASTFINDER_DATA", ROOT.parent / "shared" / "data"))
DEV = DATA / "dev"
CLIPS = ["friends", "avenger2", "herapheri", "billhyland", "testvideo"]


def clip(name: str) -> Path:
    return DEV / name / "video.mp4"


def truth(name: str) -> dict:
    return json.loads((DEV / name / "truth.json").read_text())


def run_cli(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "castfinder", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def assert_clean_error(result, *words, code=None):
    """A command refused its input the way users are promised: one 'castfinder: error:' line naming
    what is wrong (each of `words` in it), no traceback, and exit code `code` (any but 0 and 1 if None)."""
    if code is None:
        assert result.returncode not in (0, 1), (result.returncode, result.stderr)
    else:
        assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("castfinder: error:"), result.stderr
    for w in words:
        assert w in line, line


def run_beside(job, workers, done):
    """Run an ingest job while `workers` (callables) run in threads; `done` is set when the job ends,
    which is their cue to stop. Returns the job's result once every worker has ended."""
    import threading
    threads = [threading.Thread(target=w) for w in workers]
    for t in threads:
        t.start()
    try:
        return job.run()
    finally:
        done.set()
        for t in threads:
            t.join()


@pytest.fixture(scope="session", autouse=True)
def _data_present():
    if not DEV.is_dir():
        pytest.exit(f"evaluation data not found at {DATA} (set CASTFINDER_DATA)", returncode=2)


@pytest.fixture(scope="session")
def ingest_cfg():
    from castfinder.core.config import load_config
    return load_config("default").ingest


@pytest.fixture(scope="session")
def models(ingest_cfg):
    from castfinder.stream.pipeline import Models
    return Models(ingest_cfg)


@pytest.fixture(scope="session")
def friends_index(tmp_path_factory, models, ingest_cfg):
    """The friends clip ingested once with the offline defaults."""
    from castfinder.index.store import IndexStore
    from castfinder.stream.pipeline import IngestJob

    path = tmp_path_factory.mktemp("friends_index")
    store = IndexStore(path, writable=True)
    result = IngestJob(str(clip("friends")), store, ingest_cfg, models).run()
    store.close()
    return path, result


def serve_http(handler):
    """A threading HTTP server on 127.0.0.1 (a free port) answering with `handler`, served from a daemon
    thread: returns (server, "http://127.0.0.1:PORT"); stop it with shutdown() and server_close()."""
    import http.server
    import threading
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def copy_index(path, tmp_path, name="copy"):
    """A private copy of a shared (session) index, to change or damage safely."""
    import shutil
    dst = tmp_path / name
    shutil.copytree(path, dst)
    return dst


def make_video(path, seconds=2.0, fps=10, size=(160, 120), seed=0):
    """A small synthetic MP4 (smooth moving colour noise, no faces)."""
    import av
    import numpy as np
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
