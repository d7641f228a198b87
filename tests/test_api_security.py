"""The HTTP API reads only the media it should, and bounds what one request costs. A real
`castfinder serve` on 127.0.0.1 with real files: media roots and URL prefixes, one uniform 403
outside them, media served only from the very file the ingest read (a swap for a symlink to
/etc/passwd is refused), ids that overflow SQLite, one error shape, chunked uploads cut off as they
arrive, photo count/pixel limits, a bounded thumbnail cache, a reader-only server that refuses
writes (409), and /healthz telling the truth about a damaged index."""

from __future__ import annotations

import io
import os
import shutil
import socket
import sqlite3
import time

import numpy as np
import pytest
from PIL import Image

from conftest import DEV, clip, make_video
from service_helpers import Server, Site

HUGE = "99999999999999999999"


def png(width, height) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    make_video(root / "small.mp4", seconds=2.0)
    make_video(root / "swap.mp4", seconds=2.0, seed=1)
    (root / "allowed").mkdir()
    (root / "secret").mkdir()
    make_video(root / "allowed" / "clip.mp4", seconds=1.0, seed=2)
    shutil.copy(root / "allowed" / "clip.mp4", root / "secret" / "clip.mp4")
    return root


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    root = tmp_path_factory.mktemp("outside")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(root / "secret.jpg")
    (root / "notvideo.txt").write_text("hello " * 100)
    (root / "folder").mkdir()
    make_video(root / "video.mp4", seconds=1.0, seed=3)
    return root


@pytest.fixture(scope="module")
def files(media):
    fs = Site(media)
    yield fs
    fs.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, media, files):
    srv = Server(tmp_path_factory.mktemp("secure") / "index", media_roots=(DEV, media),
                 extra=("--allow-url-prefix", f"{files.url}/allowed/", "--thumbnail-cache-mb", "0.1",
                        "--max-ingests", "1"))
    yield srv
    log = srv.stop()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def friends(server):
    """friends ingested through the API (its folder is a media root); its cast built once."""
    r = server.client.post("/videos", json={"source": str(clip("friends"))})
    assert r.status_code in (200, 202), r.text
    vid = r.json()["id"]
    assert server.wait_video(vid)["status"] == "done"
    assert server.client.get(f"/videos/{vid}/cast").status_code == 200
    return vid


def post_source(server, source):
    return server.client.post("/videos", json={"source": source})


def test_outside_the_roots_one_uniform_403(server, media, outside):
    os.symlink(outside / "secret.jpg", media / "link-out.mp4")       # a link inside a root, pointing out
    sources = ["/etc/passwd", "/proc/self/environ", "/dev/zero", str(outside / "secret.jpg"),
               str(outside / "missing.mp4"), str(outside / "folder"), str(outside / "notvideo.txt"),
               str(outside / "video.mp4"), str(media / ".." / outside.name / "video.mp4"), str(media / "link-out.mp4"),
               "small.mp4", "./small.mp4", f"file:{media / 'small.mp4'}", f"concat:{media / 'small.mp4'}",
               f"subfile,,start,0,end,0,,:{media / 'small.mp4'}", "-", "/", str(media) + "\x00/x"]
    bodies = set()
    for src in sources:
        r = post_source(server, src)
        assert r.status_code == 403, (src, r.status_code, r.text)
        bodies.add(r.text)
    assert len(bodies) == 1, bodies   # nothing tells an existing file from a missing one
    assert "not allowed" in bodies.pop()
    assert not [v for v in server.client.get("/videos").json() if str(outside) in v["source"] or "/etc" in v["source"]]


def test_inside_the_roots_errors_say_why(server, media):
    assert post_source(server, str(media / "missing.mp4")).status_code == 400
    assert "no such file" in post_source(server, str(media / "missing.mp4")).json()["error"]
    assert "directory" in post_source(server, str(media / "secret")).json()["error"]
    os.symlink(media / "small.mp4", media / "link-in.mp4")   # a link that stays inside a root is fine
    r = post_source(server, str(media / "link-in.mp4"))
    assert r.status_code == 202, r.text
    assert r.json()["source"] == os.path.realpath(media / "small.mp4")  # what is opened is the real file
    assert server.wait_video(r.json()["id"])["status"] == "done"


def test_urls_only_under_an_allowed_prefix(server, files):
    refused = [f"{files.url}/secret/clip.mp4", f"{files.url}/allowed/../secret/clip.mp4",
               f"{files.url}/allowed/%2e%2e/secret/clip.mp4", f"{files.url}/allowedX/clip.mp4",
               f"{files.url}/allowed", f"http://127.0.0.1:{server.port}/healthz",
               f"http://127.0.0.1:{files.port}@127.0.0.1:{server.port}/allowed/clip.mp4",
               f"http://user@127.0.0.1:{files.port}/allowed/clip.mp4", f"https://127.0.0.1:{files.port}/allowed/clip.mp4",
               f"http://localhost:{files.port}/allowed/clip.mp4", f"http://127.0.0.1/allowed/clip.mp4",
               f"rtsp://127.0.0.1:{files.port}/allowed/clip.mp4", f"{files.url}/allowed/clip.mp4 x",
               "udp://127.0.0.1:9"]
    for src in refused:
        r = post_source(server, src)
        assert r.status_code == 403, (src, r.text)
    assert files.hits == [], files.hits                      # the server never fetched any of them
    r = post_source(server, f"{files.url}/allowed/clip.mp4")
    assert r.status_code == 202, r.text
    assert server.wait_video(r.json()["id"])["status"] == "done"
    assert files.hits and all(h.startswith("/allowed/") for h in files.hits)


def test_media_is_served_only_from_the_file_the_ingest_read(server, media, outside):
    r = post_source(server, str(media / "swap.mp4"))
    assert r.status_code == 202, r.text
    vid = r.json()["id"]
    assert server.wait_video(vid)["status"] == "done"
    original = (media / "swap.mp4").read_bytes()
    r = server.client.get(f"/videos/{vid}/media", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == original[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{len(original)}"
    assert server.client.get(f"/videos/{vid}/media").content == original
    assert server.client.get(f"/videos/{vid}/media", headers={"Range": "bytes=-10"}).content == original[-10:]
    assert server.client.get(f"/videos/{vid}/media", headers={"Range": f"bytes={len(original)}-"}).status_code == 416
    assert server.client.get(f"/shots/{vid}/0/thumbnail").status_code == 200
    assert server.client.get(f"/videos/{vid}").json()["media"] == f"/videos/{vid}/media"

    os.rename(media / "swap.mp4", media / "swap.bak")

    def refused(what):
        for path in (f"/videos/{vid}/media", f"/shots/{vid}/0/thumbnail?frame=999999"):
            r = server.client.get(path)
            assert r.status_code == 404, (what, path, r.status_code)
            assert "replaced" in r.json()["error"] and b"root:" not in r.content
        assert server.client.get(f"/videos/{vid}").json()["media"] is None

    os.symlink("/etc/passwd", media / "swap.mp4")
    refused("symlink to /etc/passwd")
    os.unlink(media / "swap.mp4")
    os.symlink(outside / "video.mp4", media / "swap.mp4")
    refused("symlink to a video outside the roots")
    os.unlink(media / "swap.mp4")
    shutil.copy2(media / "swap.bak", media / "swap.mp4")        # same bytes and mtime, another file
    refused("a copy")
    os.unlink(media / "swap.mp4")
    os.mkfifo(media / "swap.mp4")                               # must not hang the open
    t0 = time.time()
    refused("a FIFO")
    assert time.time() - t0 < 10
    os.unlink(media / "swap.mp4")
    os.rename(media / "swap.bak", media / "swap.mp4")           # the very file again: served again
    assert server.client.get(f"/videos/{vid}/media", headers={"Range": "bytes=0-9"}).content == original[:10]


def test_ids_that_overflow_sqlite_are_404_or_422(server, friends):
    paths = [f"/videos/{HUGE}", f"/videos/{HUGE}/media", f"/videos/{HUGE}/cast", f"/videos/{HUGE}/cast?recluster=true",
             f"/videos/{friends}/cast/{HUGE}/sheet.png", f"/videos/{HUGE}/cast/1/sheet.png", f"/shots/{HUGE}/0/thumbnail",
             f"/shots/{friends}/{HUGE}/thumbnail", f"/shots/{friends}/0/thumbnail?frame={HUGE}",
             f"/shots/{friends}/0/thumbnail?face={HUGE}", f"/shots/{friends}/0/thumbnail?face=-{HUGE}",
             "/videos/-1", "/videos/1e3", "/videos/abc", f"/videos/{2**63 - 1}", f"/videos/{2**63}"]
    for path in paths:
        r = server.client.get(path)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)
        assert set(r.json()) == {"error"}, r.text
    for r in (server.client.delete(f"/videos/{HUGE}"), server.client.delete(f"/videos/{HUGE}?purge=true"),
              server.client.put(f"/videos/{HUGE}/cast/1", json={"name": "x"}),
              server.client.put(f"/videos/{friends}/cast/{HUGE}", json={"name": "x"}),
              server.client.post("/query", data={"video": HUGE, "character": "x"}),
              server.client.post("/query", data={"video": "-5", "character": "x"})):
        assert r.status_code in (404, 422), (r.request.url, r.status_code, r.text)
        assert set(r.json()) == {"error"}, r.text
    # a face that is not in the frame asked for is refused, not rendered (nor cached)
    assert server.client.get(f"/shots/{friends}/0/thumbnail?face=123456").status_code == 404


def test_every_error_has_one_shape(server):
    c = server.client
    cases = [(c.get("/no/such/route"), 404), (c.get("/static/nope.js"), 404), (c.put("/videos"), 405),
             (c.delete("/query"), 405), (c.post("/videos", content=b"{bad json", headers={"content-type": "application/json"}), 422),
             (c.post("/videos", json={"source": 5}), 422), (c.post("/videos", json={"source": "x" * 5000}), 422),
             (c.post("/videos", content=b"source=x", headers={"content-type": "text/plain"}), 422),
             (c.post("/query", data={"top_k": "0"}), 422), (c.post("/query", data={"limit": "-1"}), 422),
             (c.post("/query", data={"top_k": "many"}), 422), (c.get("/videos/1/cast?recluster=maybe"), 422)]
    for r, code in cases:
        assert r.status_code == code, (r.request.method, r.request.url, r.status_code, r.text)
        doc = r.json()
        assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], r.text
        assert "Traceback" not in r.text and "pydantic" not in r.text


def _chunked_post(port, path, total_mb, content_type="multipart/form-data; boundary=BB"):
    """Send a chunked body until the server answers; returns (bytes sent, response head)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: {content_type}\r\n\r\n".encode())
    head = b'--BB\r\nContent-Disposition: form-data; name="photos"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
    chunk = b"\xff" * (1 << 20)
    sent, answer = 0, b""
    s.settimeout(0.002)
    try:
        while sent < total_mb << 20:
            try:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except socket.timeout:
                pass
            try:
                answer = s.recv(65536)
                break
            except socket.timeout:
                continue
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(10)
    try:
        answer += s.recv(65536)
    except OSError:
        pass
    s.close()
    return sent, answer


def test_chunked_uploads_are_cut_off_as_they_arrive(server):
    sent, answer = _chunked_post(server.port, "/query", 300)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'{"error": "request too large' in answer
    assert sent < 100 << 20, sent / 2**20            # refused at the 64 MB limit, not after 300 MB
    sent, answer = _chunked_post(server.port, "/videos", 50, "application/json")
    assert answer.startswith(b"HTTP/1.1 413") and sent < 8 << 20, (sent, answer[:200])
    # a declared length over the limit is refused before a byte of the body is read
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 314572800\r\n"
              b"Content-Type: multipart/form-data; boundary=BB\r\n\r\n")
    s.settimeout(10)
    assert s.recv(65536).startswith(b"HTTP/1.1 413")
    s.close()
    for length in (b"-1", b"abc"):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /videos HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
        s.settimeout(10)
        assert s.recv(65536).split(b" ")[1] in (b"400", b"413"), length
        s.close()
    assert server.alive()


def test_photo_count_and_pixels_are_bounded(server, friends):
    c = server.client
    photo = (DEV / "friends" / "refs").rglob("*.jpg").__next__().read_bytes()
    r = c.post("/query", files=[("photos", (f"{i}.jpg", photo, "image/jpeg")) for i in range(21)])
    assert r.status_code == 400 and "too many photos" in r.json()["error"]
    big = png(8000, 7000)                     # 56 megapixels in ~100 kB: refused from its header
    t0 = time.time()
    r = c.post("/query", files=[("photos", ("big.png", big, "image/png"))])
    assert r.status_code == 413 and "megapixel" in r.json()["error"], r.text
    many = png(6500, 6500)                    # 42 MP each: fine alone, five of them are too much together
    r = c.post("/query", files=[("photos", (f"{i}.png", many, "image/png")) for i in range(5)])
    assert r.status_code == 413 and "together" in r.json()["error"], r.text
    assert time.time() - t0 < 30
    r = c.post("/query", files=[("photos", ("a.jpg", photo, "image/jpeg"))], data={"fusion": "best"})
    assert r.status_code == 400 and "unknown fusion" in r.json()["error"]


def test_thumbnail_cache_stays_within_its_limit(server, friends):
    cache = server.index_dir / "thumbnails"
    con = sqlite3.connect(f"file:{server.index_dir / 'catalogue.sqlite'}?mode=ro", uri=True)
    frames = con.execute("SELECT id, shot_idx FROM frames WHERE video_id=? ORDER BY id", (friends,)).fetchall()
    con.close()
    assert len(frames) >= 20
    for frame, shot in frames[:24]:
        r = server.client.get(f"/shots/{friends}/{shot}/thumbnail?frame={frame}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        used = sum(p.stat().st_size for p in cache.iterdir() if p.is_file())
        assert used <= 0.1 * 1024 * 1024, used        # --thumbnail-cache-mb 0.1


def test_a_reader_server_refuses_writes(server, friends):
    assert server.client.get(f"/videos/{friends}/cast?recluster=true").status_code == 200  # the writer may
    # the first server holds the writer lock on the index: this one can only read it
    con = sqlite3.connect(f"file:{server.index_dir / 'catalogue.sqlite'}?mode=ro", uri=True)
    before = con.execute("SELECT id, name, threshold FROM clusters ORDER BY id").fetchall()
    assert before
    reader = Server(server.index_dir)
    try:
        c = reader.client
        assert c.get("/healthz").json()["writable"] is False
        cluster = before[0][0]
        for r, what in [(c.put(f"/videos/{friends}/cast/{cluster}", json={"name": "Someone"}), "name"),
                        (c.get(f"/videos/{friends}/cast?recluster=true"), "recluster"),
                        (c.delete(f"/videos/{friends}?purge=true"), "remove"),
                        (c.post("/videos", json={"source": str(clip("avenger2"))}), "ingest")]:
            assert r.status_code == 409, (what, r.status_code, r.text)
            assert "only reads" in r.json()["error"], r.text
        r = c.get(f"/videos/{friends}/cast")                  # reading the cast is fine
        assert r.status_code == 200 and [cl["cluster"] for cl in r.json()["clusters"]]
        assert c.get(f"/videos/{friends}").json()["status"] == "done"
    finally:
        log = reader.stop()
    assert con.execute("SELECT id, name, threshold FROM clusters ORDER BY id").fetchall() == before
    con.close()
    assert "Traceback" not in log, log


def _copy_index(src, dst):
    """A consistent copy of a live index (SQLite's backup API; FAISS files as they are)."""
    dst.mkdir()
    shutil.copytree(src / "faiss", dst / "faiss")
    with sqlite3.connect(f"file:{src / 'catalogue.sqlite'}?mode=ro", uri=True) as a, \
            sqlite3.connect(dst / "catalogue.sqlite") as b:
        a.backup(b)
    b.close()


def test_health_tells_the_truth_about_a_damaged_index(server, friends, tmp_path):
    damaged = tmp_path / "damaged"
    _copy_index(server.index_dir, damaged)
    # the vectors' pages of the catalogue overwritten, FAISS files gone: nothing can be searched
    con = sqlite3.connect(damaged / "catalogue.sqlite")
    pages = [r[0] for r in con.execute("SELECT pageno FROM dbstat WHERE name='vectors'")]
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(damaged / "catalogue.sqlite", "r+b") as f:
        for p in pages:
            f.seek((p - 1) * size)
            f.write(np.random.default_rng(p).integers(0, 256, size, np.uint8).tobytes())
    shutil.rmtree(damaged / "faiss")
    srv = Server(damaged, media_roots=())          # and no media roots: no path may be ingested
    try:
        r = srv.client.get("/healthz")
        assert r.status_code == 503, r.text
        doc = r.json()
        assert doc["status"] != "ok" and doc["problems"], doc
        photo = (DEV / "friends" / "refs").rglob("*.jpg").__next__()
        r = srv.query([photo])
        assert r.status_code >= 400, r.text
        for word in ("Traceback", "faiss::", ".cpp", "Error in", "sqlite3.", "File \""):
            assert word not in r.text and word not in str(doc), (word, r.text, doc)
        # no roots given: path ingest is off, whatever the path
        for src in (str(clip("friends")), "/etc/passwd", "http://127.0.0.1:9/x"):
            assert srv.client.post("/videos", json={"source": src}).status_code == 403
    finally:
        log = srv.stop()
    assert "Traceback" not in log, log


def test_ingests_at_once_are_bounded(server, media, friends):
    first = post_source(server, str(clip("herapheri")))
    assert first.status_code == 202, first.text
    r = post_source(server, str(clip("billhyland")))          # --max-ingests 1: no slot left
    assert r.status_code == 429 and "ingests are running" in r.json()["error"], r.text
    assert post_source(server, str(clip("friends"))).status_code == 200   # reusing a done video needs no slot
    server.client.delete(f"/videos/{first.json()['id']}")
    assert server.wait_video(first.json()["id"])["status"] in ("stopped", "done")


def test_health_details_need_the_token(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("tokened") / "index", token="t0ken", media_roots=())
    try:
        import httpx
        anonymous = httpx.get(f"{srv.url}/healthz").json()
        assert set(anonymous) == {"status", "ready"}, anonymous
        assert {"problems", "writable", "videos"} <= set(srv.client.get("/healthz").json())
        assert httpx.get(f"{srv.url}/videos", params={"access_token": "t0ke"}).status_code == 401
        assert httpx.get(f"{srv.url}/videos", params={"access_token": "t0ken"}).status_code == 200
    finally:
        srv.stop()


def test_the_server_stops_in_seconds_mid_ingest(server):
    r = post_source(server, str(clip("avenger2")))
    assert r.status_code in (200, 202), r.text
    time.sleep(3)
    t0 = time.time()
    server.proc.terminate()
    server.proc.wait(timeout=60)
    assert time.time() - t0 < 25, time.time() - t0


def test_stored_errors_do_not_leak_internals():
    from castfinder.service import _public_error
    cxx = "ingest failed: Error in void faiss::IndexIDMap2Template<faiss::Index>::add at /project/faiss/faiss/IndexIDMap.cpp:83"
    assert "faiss" not in _public_error(cxx) and "server log" in _public_error(cxx)
    assert _public_error("friends.mp4: file ended early at 5.0 of 14.9 s") == "friends.mp4: file ended early at 5.0 of 14.9 s"
    assert _public_error(None) is None
