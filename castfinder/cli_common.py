"""What the `castfinder` commands share (cli.py and cli_many.py): the preset from the options, how Ctrl-C
and SIGTERM stop a command or an ingest, the line that sums up an ingest, and the shot listing it ends with."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from .core.config import load_config
from .timefmt import hms

INTERRUPTED = threading.Event()  # set by the first Ctrl-C/SIGTERM, even one a library swallowed (PyAV opening a URL)
STOP_GRACE_S = float(os.environ.get("CASTFINDER_STOP_GRACE_S", "15"))  # Ctrl-C/SIGTERM: flush this long at most


def config_from_args(args):
    """The preset, with --weights-dir and --device (where the command has them) applied."""
    overrides = {k: v for k in ("weights_dir", "device") if (v := getattr(args, k, None))}
    return load_config(args.config, {"ingest": overrides})


def stop_on_signals(job) -> None:
    """Ctrl-C/SIGTERM: close the current shot, flush and save. If that has not ended the process
    within STOP_GRACE_S (a stage stuck on a source or a model), or a second signal comes, leave at
    once: the catalogue is committed batch by batch, so the next run resumes from the last closed shot."""
    stopping = threading.Event()

    def force_exit(why: str) -> None:
        print(f"\ncastfinder: {why}; exiting now (the next ingest resumes from the last closed shot)",
              file=sys.stderr, flush=True)
        os._exit(130)

    def on_signal(signum, frame):
        if stopping.is_set():
            force_exit("second signal")
        stopping.set()
        print("\nstopping: saving the closed shots" + (", closing the current one..." if job.info.is_live else
                                                       " (the next run redoes the open one)..."), file=sys.stderr, flush=True)
        timer = threading.Timer(STOP_GRACE_S, force_exit, args=(f"not stopped after {STOP_GRACE_S:g} s",))
        timer.daemon = True
        timer.start()
        job.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def interrupt_on_signals() -> None:
    """Every command: Ctrl-C or SIGTERM interrupts it (KeyboardInterrupt, its clean-up runs), and if the
    clean-up has not ended the process within STOP_GRACE_S, it ends anyway. `ingest` replaces this with
    its own stop once its job runs; `serve` with uvicorn's."""
    armed = INTERRUPTED

    def on_signal(signum, frame):
        if not armed.is_set():
            armed.set()

            def force_exit():
                print(f"\ncastfinder: not stopped after {STOP_GRACE_S:g} s; exiting now", file=sys.stderr, flush=True)
                os._exit(130)
            timer = threading.Timer(STOP_GRACE_S, force_exit)
            timer.daemon = True
            timer.start()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)


def print_shots(idx, video_id: int, as_json: bool = False) -> None:
    shots = idx.shots(video_id)
    if as_json:
        print(json.dumps(shots, indent=1))
        return
    row = idx.video(video_id)
    print(f"video {video_id}: {row['name']} ({row['status']})")
    print(f"{'shot':>5}  {'start':>12}  {'end':>12}  {'frames':>6}  {'faces':>5}")
    for s in shots:
        print(f"{s['shot']:>5}  {hms(s['start_s'])}  {hms(s['end_s'])}  {s['frames']:>6}  {s['faces']:>5}"
              + ("" if s["closed"] else "  (open)"))


def ingest_line(doc: dict, name: str | None = None) -> str:
    """An ingest's record (IngestResult.record) as the lines the CLI prints; name: the source's short
    name, shown when several sources ran together."""
    video = f"video {doc['video']}" + (f" ({name})" if name else "")
    if doc.get("reused"):
        return f"{video}: already indexed ({doc['shots']} shots, {doc['vectors']} vectors); reused (--force rebuilds)"
    line = (f"{video}: {doc['status']}, {doc['indexed_until_s']:.1f} s indexed in {doc['wall_s']:.1f} s "
            f"({doc['realtime_factor']:.2f}x real time); {doc['shots']} shots, {doc['frames']} frames kept "
            f"({doc['frames_dropped']} near-duplicates dropped of {doc['frames_sampled']} sampled), "
            f"{doc['faces']} faces, {doc['vectors']} vectors")
    for start, end in doc.get("damaged_spans") or []:
        line += f"\n  damaged data skipped: {hms(start)} - {hms(end) if end is not None else 'end'}"
    if doc.get("warning"):
        line += f"\n  warning: {doc['warning']}"
    return line
