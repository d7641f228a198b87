"""Sources and addresses an adversarial user hands castfinder, each against real servers on 127.0.0.1
and the real CLI: a playlist that never ends, Ctrl-C while a URL is opening, a path that leaves the
allowed prefix only as the server reads it (backslash, "..;"), a Ray address that is no Ray cluster.
Each ends in seconds with one clear line (or a clean interrupt), never a traceback or a hang."""

from __future__ import annotations

import http.server
import importlib.util
import json
import posixpath
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import ROOT, assert_clean_error, make_video, run_cli, serve_http


class HostileSite:
    """/ok/trickle.m3u8: a playlist that sends a line every 2 s and never ends; /ok/stall.ts: answers
    nothing; any other path is read as a lenient server would (%-decoded, backslash as "/", ";params"
    dropped, dot segments resolved) and served from `root`. Every path asked is logged."""

    def __init__(self, root: Path):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                hits.append(self.path)
                if self.path.startswith("/ok/trickle.m3u8"):
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"#EXTM3U\n")
                    try:
                        while True:
                            self.wfile.flush()
                            time.sleep(2)
                            self.wfile.write(b"#EXT-X-TARGETDURATION:2\n")
                    except OSError:
                        return
                if self.path.startswith("/ok/stall.ts"):  # the request is read, nothing is answered
                    time.sleep(20)
                    return
                path = unquote(self.path.split("?")[0]).replace("\\", "/")
                path = posixpath.normpath("/".join(seg.split(";")[0] for seg in path.split("/")))
                file = root / path.lstrip("/")
                if not file.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd, self.url = serve_http(Handler)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "ok").mkdir()
    (root / "secret").mkdir()
    make_video(root / "ok" / "clip.mp4", seconds=1.0)
    make_video(root / "secret" / "clip.mp4", seconds=1.0)
    s = HostileSite(root)
    yield s
    s.close()


def test_a_playlist_that_never_ends_fails_alone_and_the_wall_clock_is_the_run(site, tmp_path):
    """The guard reads a playlist within its timeout in all, not per byte: the source fails with one line
    while the file beside it is indexed; the summary's wall time runs from the first source that ran
    (it was measured from when the last source opened, so the file's seconds were divided by ~0)."""
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0)
    t0 = time.monotonic()
    r = run_cli("ingest", clip, f"{site.url}/ok/trickle.m3u8", "--index", tmp_path / "idx", "--json",
                "--allow-url-prefix", f"{site.url}/ok/", timeout=90)
    assert time.monotonic() - t0 < 60
    assert_clean_error(r, "trickle.m3u8", code=2)
    doc = json.loads(r.stdout)
    file_doc, url_doc = doc["sources"]
    assert file_doc["status"] == "done" and file_doc["vectors"] > 0, file_doc
    assert url_doc["status"] == "failed" and url_doc["video"] is None, url_doc
    assert doc["wall_s"] >= file_doc["wall_s"], doc      # the run is at least as long as its one source


def test_ctrl_c_while_a_url_opens_interrupts_at_once(site, tmp_path):
    """Ctrl-C while the guard reads a playlist for FFmpeg: PyAV dropped the KeyboardInterrupt (printing
    its traceback), the source then timed out and the file after it was ingested anyway."""
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0)
    before = len(site.hits)
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", f"{site.url}/ok/trickle.m3u8", str(clip),
                             "--index", str(tmp_path / "idx"), "--allow-url-prefix", f"{site.url}/ok/"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while "/ok/trickle.m3u8" not in site.hits[before:]:  # the guard is reading the playlist now
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t_signal = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t_signal < 6, err       # not the guard's 10 s timeout, nor the file's run
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "castfinder: interrupted", err
    assert "video" not in out, out                     # the file after it was not ingested


def test_ctrl_c_while_ffmpeg_opens_a_silent_url_stops_every_source(site, tmp_path):
    """Without a prefix list FFmpeg opens the URL itself: PyAV turns a Ctrl-C during its open into an
    ExitError (read as a timeout), so the interrupt was lost and the file after it ingested in full."""
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0)
    before = len(site.hits)
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", f"{site.url}/ok/stall.ts", str(clip),
                             "--index", str(tmp_path / "idx")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while "/ok/stall.ts" not in site.hits[before:]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "castfinder: interrupted", err
    assert "video" not in out, out


@pytest.mark.parametrize("path", ["/ok/..%5csecret/clip.mp4", "/ok/..;/secret/clip.mp4", "/ok/%2e%2e%3b/secret/clip.mp4"])
def test_a_path_that_leaves_the_prefix_as_the_server_reads_it_is_refused(site, tmp_path, path):
    """A server that reads "\\" as "/" or drops ";params" resolves these to /secret/clip.mp4: the guard
    refuses them before asking (it let them through), and the server is never asked."""
    before = len(site.hits)
    r = run_cli("ingest", site.url + path, "--index", tmp_path / "idx", "--allow-url-prefix", f"{site.url}/ok/",
                timeout=60)
    assert_clean_error(r, "not allowed", code=2)
    assert site.hits[before:] == [], site.hits[before:]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'castfinder[ray]')")
def test_a_ray_address_that_is_no_ray_cluster_is_one_line_in_seconds(site, tmp_path):
    """ray.init retried these for many minutes (3.5 min and still going, for a refused port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    web = site.url.split("://")[1]
    for address, words in ((f"127.0.0.1:{closed}", "refused"), (web, "something else")):
        t0 = time.monotonic()
        r = run_cli("ingest", "--ray", address, make_video(tmp_path / "c.mp4"), "--index", tmp_path / "idx", timeout=120)
        assert time.monotonic() - t0 < 30, address
        assert_clean_error(r, "no Ray cluster", words, code=2)
    r = run_cli("ingest", "--ray", "127.0.0.1:99999", tmp_path / "c.mp4", "--index", tmp_path / "idx")
    assert_clean_error(r, "port", code=2)


def test_a_url_slow_to_open_holds_up_no_other_ingest(site, tmp_path):
    """The source opened inside the Index's ingest lock: one POST of a silent URL made every other POST
    to the server wait for its 10 s open timeout (measured: a file's POST answered after 9.4 s)."""
    import castfinder
    from castfinder.core.errors import InputError, TooManyIngestsError

    with castfinder.open_index(tmp_path / "idx", max_ingests=2) as idx:
        idx.ingest(make_video(tmp_path / "warm.mp4", seconds=1.0, seed=3))   # models loaded
        failed = []

        def open_silent():
            try:
                idx.start_ingest(f"{site.url}/ok/stall.ts?{time.time()}")
            except InputError as exc:
                failed.append(str(exc))
        opener = threading.Thread(target=open_silent)
        opener.start()
        deadline = time.monotonic() + 10
        while not any(h.startswith("/ok/stall.ts?") for h in site.hits):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        run = idx.start_ingest(make_video(tmp_path / "b.mp4", seconds=4.0, seed=4))
        assert time.monotonic() - t0 < 4, time.monotonic() - t0
        with pytest.raises(TooManyIngestsError):   # the slot the opening URL holds counts
            idx.start_ingest(make_video(tmp_path / "c.mp4", seconds=1.0, seed=5))
        assert run.wait(60)["status"] == "done"
        opener.join(30)
        assert failed and "timed out" in failed[0], failed
