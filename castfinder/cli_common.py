"""What the `castfinder` commands share (cli.py and cli_many.py): the preset from the options, how Ctrl-C
and SIGTERM stop a command or an ingest, and the shot listing an ingest ends with."""

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
