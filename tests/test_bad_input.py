"""Bad sources: one clear line and a non-zero exit, never a traceback; damaged data is skipped."""

import shutil
import wave

import pytest

from castfinder.index.store import IndexStore

from conftest import assert_clean_error, clip, run_cli


def make_wav(path):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 8000)


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "empty", "audio"])
def test_bad_source(tmp_path, kind):
    src = tmp_path / "input"
    words = []
    if kind == "directory":
        src.mkdir()
        words = ["directory"]
    elif kind == "text":
        src.write_text("this is not a video\n" * 100)
        words = ["not a video"]
    elif kind == "empty":
        src.write_bytes(b"")
        words = ["empty"]
    elif kind == "audio":
        src = tmp_path / "sound.wav"
        make_wav(src)
        words = ["no video stream"]
    else:
        words = ["no such file"]
    result = run_cli("ingest", src, "--index", tmp_path / "idx", timeout=120)
    assert_clean_error(result, *words)


def test_unreachable_url(tmp_path):
    result = run_cli("ingest", "rtsp://127.0.0.1:9/none", "--index", tmp_path / "idx", timeout=120)
    assert_clean_error(result, "cannot open")


def test_truncated_file_indexes_what_is_there_or_fails_cleanly(tmp_path):
    data = clip("herapheri").read_bytes()
    src = tmp_path / "half.mp4"
    src.write_bytes(data[: len(data) // 2])
    result = run_cli("ingest", src, "--index", tmp_path / "idx", timeout=300)
    assert "Traceback" not in result.stderr
    if result.returncode != 0:
        assert_clean_error(result)
    else:
        store = IndexStore(tmp_path / "idx")
        assert store.catalogue.counts(1)["frames"] > 0


def test_damage_in_the_middle_is_skipped(tmp_path):
    data = bytearray(clip("friends").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 20000] = bytes(20000)  # overwrite 20 kB in the middle with zeros
    src = tmp_path / "damaged.mp4"
    src.write_bytes(bytes(data))
    result = run_cli("ingest", src, "--index", tmp_path / "idx", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    store = IndexStore(tmp_path / "idx")
    row = store.catalogue.video(1)
    assert row["indexed_until_s"] > 14  # decoded past the damage to the end
    assert row["damaged_packets"] > 0 and "damaged data skipped" in result.stdout


def test_unknown_config_and_busy_index(tmp_path):
    assert_clean_error(run_cli("ingest", clip("friends"), "--index", tmp_path, "--config", "nope"), "not found")
    writer = IndexStore(tmp_path / "busy", writable=True)
    try:
        assert_clean_error(run_cli("ingest", clip("friends"), "--index", tmp_path / "busy"), "another process")
    finally:
        writer.close()
    assert_clean_error(run_cli("shots", "--index", tmp_path / "none"), "no index")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  batch_size: lots\n")
    assert_clean_error(run_cli("ingest", clip("friends"), "--index", tmp_path, "--config", bad), "batch_size")
    bad.write_text("ingest:\n  batch_sise: 4\n")
    assert_clean_error(run_cli("ingest", clip("friends"), "--index", tmp_path, "--config", bad), "unknown setting")


def test_batching_follows_the_device():
    from castfinder.core.config import IngestConfig, load_config
    cfg = load_config("default").ingest
    assert cfg.batching("cpu") == (2, 1) and cfg.batching("cuda") == (16, 2)
    assert IngestConfig(batch_size=8, queue_size=3).batching("cuda") == (8, 3)


def test_metrics_port_in_use(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        assert_clean_error(run_cli("ingest", clip("friends"), "--index", tmp_path, "--metrics-port", port), "metrics")
    finally:
        s.close()


@pytest.mark.parametrize("size", [(96, 4000), (4000, 96)])
def test_very_tall_or_wide_video_is_analysed_at_a_bounded_size(tmp_path, size):
    from conftest import make_video
    src = make_video(tmp_path / "odd.mp4", seconds=1.0, size=size)
    result = run_cli("ingest", src, "--index", tmp_path / "idx", timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    row = IndexStore(tmp_path / "idx").catalogue.video(1)
    assert row["width"] <= 640 and row["height"] <= 1280, (row["width"], row["height"])  # analysis_max_height
    assert row["frames_decoded"] == 10


def test_a_reader_that_goes_away_is_not_an_error(friends_index):
    """`castfinder videos | head -0`: the pipe is closed before castfinder writes: no error line, no
    traceback, the exit status a shell gives a command ended by SIGPIPE (141)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        proc = subprocess.run([sys.executable, "-m", "castfinder", "videos", "--index", str(friends_index[0])],
                              cwd=ROOT, stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == "", proc.stderr
