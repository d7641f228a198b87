"""Damaged or unwritable indexes and odd inputs: one clear line, never a traceback, never data loss.
Every damaged index here is a copy of a real one, damaged in tmp_path."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading

import av
import numpy as np
import pytest

from castfinder.core.errors import IndexDamagedError, InputError
from castfinder.index.store import IndexStore
from castfinder.stream.decode import VideoDecoder
from castfinder.stream.pipeline import IngestJob

from conftest import DEV, ROOT, assert_clean_error, clip, copy_index, run_cli
from test_index_integrity import check_exact, snapshot

PHOTO = sorted((DEV / "friends" / "refs" / "Ross").glob("*.jpg"))[0]


def assert_one_line(result, *words, code=2):
    assert_clean_error(result, *words, code=code)


def at_rest(path):
    """The copy as a finished process leaves it: the write-ahead log folded into catalogue.sqlite
    (the session's index may still have connections open in this process)."""
    conn = sqlite3.connect(path / "catalogue.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert not (path / "catalogue.sqlite-wal").exists()


def damage_catalogue(path, how):
    at_rest(path)
    db = path / "catalogue.sqlite"
    data = bytearray(db.read_bytes())
    if how == "truncated":
        db.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "junk":
        db.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "zeroed":  # pages in the middle overwritten: found only when a query reaches them
        mid = len(data) // 2
        data[mid:mid + 40000] = bytes(40000)
        db.write_bytes(bytes(data))


COMMANDS = {
    "videos": ["videos"],
    "shots": ["shots"],
    "cast": ["cast", "--no-sheets"],
    "query": ["query", "--photos", PHOTO, "--both"],
    "ingest": ["ingest", clip("friends")],
    "force": ["ingest", clip("friends"), "--force"],
}


@pytest.mark.parametrize("how,command", [("truncated", c) for c in ("videos", "shots", "cast", "query", "ingest")]
                         + [("junk", "videos"), ("junk", "query"), ("zeroed", "query"), ("zeroed", "force")])
def test_damaged_catalogue_is_one_clear_line(friends_index, tmp_path, how, command):
    dst = copy_index(friends_index[0], tmp_path)
    damage_catalogue(dst, how)
    before = dst.joinpath("catalogue.sqlite").read_bytes()
    result = run_cli(*COMMANDS[command], "--index", dst)
    assert_one_line(result, "index damaged:", "catalogue.sqlite", "backup")
    if how == "zeroed" and command == "force":  # the writer opened it (noting its settings), but deleted nothing
        conn = sqlite3.connect(dst / "catalogue.sqlite")
        assert conn.execute("SELECT id, status FROM videos").fetchall() == [(1, "done")]
        assert conn.execute("SELECT COUNT(*) FROM shots").fetchone()[0] == friends_index[1].shots
    else:
        assert dst.joinpath("catalogue.sqlite").read_bytes() == before  # refused before any write


def test_damaged_faiss_files_are_rebuilt_from_the_catalogue(friends_index, tmp_path):
    intact = run_cli("query", "--photos", PHOTO, "--both", "--json", "--index", friends_index[0])
    assert intact.returncode == 0, intact.stderr
    dst = copy_index(friends_index[0], tmp_path)
    effnet, dlib = dst / "faiss" / "effnet-lite0.index", dst / "faiss" / "dlib-resnet.index"
    effnet.write_bytes(effnet.read_bytes()[:5000])                 # truncated
    dlib.write_bytes(b"\x00junk" * 1000)                           # overwritten
    (dst / "faiss" / "dlib-resnet.json").write_text("{not json")  # the sidecar older versions wrote
    damaged = run_cli("query", "--photos", PHOTO, "--both", "--json", "--index", dst)
    assert damaged.returncode == 0 and "Traceback" not in damaged.stderr, damaged.stderr
    assert damaged.stderr.count("rebuilding it from the catalogue") == 2, damaged.stderr
    assert json.loads(damaged.stdout)["results"] == json.loads(intact.stdout)["results"]
    again = run_cli("ingest", clip("friends"), "--index", dst)
    assert again.returncode == 0 and "already indexed" in again.stdout, again.stderr
    # a writer that opens them (an ingest that adds or resumes, the service) saves the repaired checkpoints
    writer = IndexStore(dst, writable=True)
    writer.open_features()
    writer.close()
    assert snapshot(dst) == snapshot(friends_index[0])  # check_exact inside: one entry per row, no sidecar


def test_force_with_a_damaged_faiss_file_keeps_every_row(friends_index, tmp_path, models, ingest_cfg):
    dst = copy_index(friends_index[0], tmp_path)
    effnet = dst / "faiss" / "effnet-lite0.index"
    effnet.write_bytes(effnet.read_bytes()[:3000])
    store = IndexStore(dst, writable=True)
    result = IngestJob(str(clip("friends")), store, ingest_cfg, models, force=True).run()
    store.close()
    assert result.status == "done" and not result.reused
    check_exact(dst)
    assert IndexStore(dst).catalogue.counts(result.video_id) == IndexStore(friends_index[0]).catalogue.counts(1)


def test_force_checks_everything_before_deleting(friends_index, tmp_path, models, ingest_cfg):
    """What can fail (here: the index's feature list is damaged) fails before the old rows go."""
    dst = copy_index(friends_index[0], tmp_path)
    before = IndexStore(dst).catalogue.counts(1)
    store = IndexStore(dst, writable=True)
    store.catalogue.conn.execute("UPDATE meta SET value='{broken' WHERE key='feature_dims'")
    with pytest.raises(IndexDamagedError, match="feature_dims"):
        IngestJob(str(clip("friends")), store, ingest_cfg, models, force=True).run()
    store.catalogue.conn.execute("UPDATE meta SET value=? WHERE key='feature_dims'",
                                 (json.dumps({"dlib-resnet": 128, "effnet-lite0": 1280}),))
    store.close()
    assert IndexStore(dst).catalogue.counts(1) == before
    check_exact(dst)


def _read_only(cmd: list) -> list:
    """Run cmd unable to write a read-only folder: root ignores permissions unless it loses CAP_DAC_OVERRIDE."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux): cannot drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", *cmd]


def test_read_only_index_folder(friends_index, tmp_path):
    dst = copy_index(friends_index[0], tmp_path)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        probe = subprocess.run(_read_only(["touch", str(dst / "probe")]), capture_output=True)
        assert probe.returncode != 0, "the folder is still writable: the test would prove nothing"

        def cli(*args):
            return subprocess.run(_read_only([sys.executable, "-m", "castfinder", *map(str, args), "--index", str(dst)]),
                                  capture_output=True, text=True, timeout=300, cwd=ROOT)

        # readers read it as it is
        listed = cli("videos")
        assert listed.returncode == 0 and "done" in listed.stdout, listed.stderr
        found = cli("query", "--photos", PHOTO, "--json")
        assert found.returncode == 0 and json.loads(found.stdout)["results"], found.stderr
        # writers say so in one line
        assert_one_line(cli("ingest", clip("friends")), "cannot write the index folder")
        assert_one_line(cli("cast", "--no-sheets"), "cannot write the index folder")
    finally:
        for p in [dst, *dst.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_truncated_file_says_it_ended_early(friends_index, tmp_path, models, ingest_cfg):
    src = tmp_path / "cut.mp4"
    data = clip("friends").read_bytes()
    src.write_bytes(data[: len(data) // 3])
    store = IndexStore(tmp_path / "idx", writable=True)
    result = IngestJob(str(src), store, ingest_cfg, models).run()
    store.close()
    assert result.status == "done" and result.frames > 0
    assert result.warning and "file ended early at" in result.warning and "of 14.9 s" in result.warning
    assert IndexStore(tmp_path / "idx").catalogue.video(result.video_id)["error"] == result.warning  # the service shows it
    assert friends_index[1].warning is None  # the whole file: no warning


def write_video(path, size, frames=12, codec="mpeg4"):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("size", [(2, 2), (16, 2), (3, 5), (2, 600)])
def test_tiny_and_odd_sized_videos(tmp_path, models, ingest_cfg, size):
    src = write_video(tmp_path / "tiny.mp4", size)
    store = IndexStore(tmp_path / "idx", writable=True)
    result = IngestJob(str(src), store, ingest_cfg, models).run()
    store.close()
    assert result.status == "done" and result.frames >= 1 and result.faces == 0


def test_audio_only_file(tmp_path):
    src = tmp_path / "sound.m4a"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(InputError, match=r"no video stream \(audio only\)"):
        VideoDecoder(str(src))


@pytest.mark.parametrize("scheme", ["rtsp", "tcp", "http"])
def test_silent_server_times_out(scheme):
    """A server that accepts the connection and never answers: 'timed out', not 'not a video file'."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = server.getsockname()[1]
        with pytest.raises(InputError, match="timed out"):
            VideoDecoder(f"{scheme}://127.0.0.1:{port}/stream", open_timeout_s=1.5)
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        server.close()
