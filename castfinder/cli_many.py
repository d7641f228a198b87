"""`castfinder ingest A B C ...`: several sources into one index, in one process (castfinder.multi_ingest):
a progress bar per source, a summary per source (--json: {"sources": [...], ...}), and an exit code
that is not 0 when any source failed (the others still finish)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .cli_common import INTERRUPTED, config_from_args, ingest_line, print_shots, stop_on_signals


class _AllJobs:
    """The running jobs as one, for the CLI's clean stop on Ctrl-C / SIGTERM."""

    def __init__(self, jobs):
        self.jobs = jobs
        live = any(j.info.is_live for j in jobs)
        self.info = type("Info", (), {"is_live": live})()

    def stop(self) -> None:
        for job in self.jobs:
            job.stop()


def short_names(sources: list[str]) -> dict[str, str]:
    """Each source as the shortest tail of its path that tells it from the others (an archive's films
    are often all called video.mp4: friends/video.mp4, herapheri/video.mp4); URLs stay whole."""
    names = {}
    files = [s for s in sources if "://" not in s]
    for s in sources:
        if "://" in s:
            names[s] = s
            continue
        parts = Path(s).parts
        for k in range(1, len(parts) + 1):
            tail = Path(*parts[-k:])
            if sum(1 for o in files if o != s and Path(*Path(o).parts[-k:]) == tail) == 0:
                break
        names[s] = str(tail)
    return names


class _Bars:
    """One tqdm bar per source (shown on a terminal only), updated from the ingest threads."""

    def __init__(self, sources: list[str]):
        from tqdm import tqdm
        self.bars = {}
        names = short_names(sources)
        for i, source in enumerate(sources):
            name = names[source]
            self.bars[source] = tqdm(total=None, unit="s", desc=name[-28:], position=i, dynamic_ncols=True,
                                     disable=None, leave=True)

    def total(self, source: str, duration: float | None) -> None:
        bar = self.bars[source]
        if duration and bar.total is None:
            bar.total = round(duration, 1)

    def update(self, p: dict) -> None:
        bar = self.bars.get(p.get("source"))
        if bar is None:
            return
        self.total(p["source"], p.get("duration_s"))
        bar.n = round(p["indexed_until_s"], 1)
        bar.set_postfix_str(f"{p['realtime_factor']:.2f}x, {p['vectors']} vectors", refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _error_line(doc: dict) -> str:
    error = doc["error"]
    where = "" if error.startswith(doc["source"]) else f"{doc['source']}: "
    video = f" (video {doc['video']} failed)" if doc.get("video") else ""
    return f"castfinder: error: {where}{error}{video}"


def cmd_ingest_many(args) -> int:
    from castfinder.stream.metrics import start_metrics_server

    from .api import open_index
    from .multi_ingest import record

    cfg = config_from_args(args)
    if args.metrics_port:
        start_metrics_server(args.metrics_port, args.metrics_host)
    with open_index(args.index, cfg, writable=True, url_prefixes=args.allow_url_prefix) as idx:
        bars = _Bars(args.source)
        runs = idx.start_ingest_many(args.source, force=args.force, progress=bars.update)
        jobs = [run.job for run in runs if run.job is not None]
        if INTERRUPTED.is_set():  # a Ctrl-C while a source was opening that PyAV swallowed: stop them all
            for job in jobs:
                job.stop()
            bars.close()
            raise KeyboardInterrupt
        if jobs:
            stop_on_signals(_AllJobs(jobs))  # Ctrl-C: every source saves its closed shots
        for run in runs:
            if run.job is not None:
                bars.total(run.source, run.job.info.duration_s)
        docs = [record(run) for run in runs]
        bars.close()
    # from the first source that ran (each starts as soon as it is open: one slow to open is no pause)
    starts = [run.started_at for run in runs if getattr(run, "started_at", None) is not None and not run.reused]
    wall = time.monotonic() - min(starts) if starts else 0.0
    ran = [d for d in docs if d.get("video") is not None and not d.get("reused")]
    indexed = sum(d.get("indexed_until_s") or 0.0 for d in ran)
    failed = [d for d in docs if d["status"] == "failed"]
    if args.json:
        print(json.dumps({"sources": docs, "wall_s": round(wall, 3),
                          "realtime_factor": round(indexed / wall, 3) if wall > 0 else 0.0,
                          "failed": len(failed)}, indent=1))
    else:
        names = short_names([d["source"] for d in docs])
        for doc in docs:
            if doc["status"] != "failed" or doc.get("video") is not None:
                print(ingest_line(doc, names.get(doc['source'], doc['source'])) if doc.get("shots") is not None else f"video {doc['video']}: failed")
        print(f"{len(docs)} sources together: {len(docs) - len(failed)} indexed, {len(failed)} failed; "
              f"{indexed:.1f} s of video in {wall:.1f} s ({indexed / wall if wall > 0 else 0:.2f}x real time "
              f"in all)")
    if args.show_shots and not args.json:
        with open_index(args.index) as idx:
            for doc in docs:
                if doc.get("video") is not None:
                    print_shots(idx, doc["video"])
    for doc in failed:  # last: the error lines end the output
        print(_error_line(doc), file=sys.stderr)
    return max((d.get("exit_code", 1) for d in failed), default=0)
