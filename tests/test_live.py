"""A live source (MPEG-TS on stdin, fed at real-time pace) stopped with Ctrl-C: the open shot is
closed, everything is saved, and the exit is clean."""

import signal
import subprocess
import sys
import threading
import time

import av

from castfinder.index.store import IndexStore

from conftest import ROOT, clip


def remux_to_ts(src, dst):
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)


def test_stdin_live_stream_stops_cleanly_on_sigint(tmp_path):
    ts = tmp_path / "live.ts"
    remux_to_ts(clip("friends"), ts)
    data = ts.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", "-", "--index", str(tmp_path / "idx")],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def feed():  # ~15 s of video over ~15 s, then keep the pipe open like a live feed
        chunk = len(data) // 60
        try:
            for i in range(0, len(data), chunk):
                proc.stdin.write(data[i:i + chunk])
                proc.stdin.flush()
                time.sleep(0.25)
            time.sleep(60)
        except (BrokenPipeError, ValueError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    db = tmp_path / "idx" / "catalogue.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some shots are indexed, then press Ctrl-C
        time.sleep(0.5)
        if db.exists():
            rows = IndexStore(tmp_path / "idx").catalogue.videos()
            if rows and IndexStore(tmp_path / "idx").catalogue.counts(rows[0]["id"])["shots"] >= 2:
                break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    store = IndexStore(tmp_path / "idx")
    video = store.catalogue.videos()[0]
    assert video["status"] == "stopped" and video["is_live"] == 1
    shots = store.catalogue.shots(video["id"])
    assert len(shots) >= 2 and all(s["closed"] for s in shots)
    # frame vectors at their own rate (ingest.frame_vector_fps): at least one for every shot, FAISS = catalogue
    n_frame_vecs = store.catalogue.feature_stats("effnet-lite0")[0]
    assert store.feature("effnet-lite0").ntotal == n_frame_vecs <= store.catalogue.counts(video["id"])["frames"]
    shots_with = {r[0] for r in store.catalogue.conn.execute(
        "SELECT DISTINCT f.shot_idx FROM vectors v JOIN frames f ON f.id=v.frame_id WHERE v.feature='effnet-lite0'")}
    assert shots_with == {s["idx"] for s in shots}
