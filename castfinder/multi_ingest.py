"""Several sources ingested together into one index by one process (`Index.ingest_many`, and
`castfinder ingest A B C`): each source is its own video with its own decode / shot-cutting thread
and writer, and all of them share one detect and one embed stage whose model calls mix their frames
(castfinder.stream.shared_stages). A source that cannot be opened, or fails while running, ends with
its own error; the others go on."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from .core.errors import CastfinderError, InputError

log = logging.getLogger(__name__)


class NotOpened:
    """A source that could not be opened: it has ended already, with its error (no video was made)."""

    video = None
    job = None
    status = "failed"
    running = False
    reused = False
    indexed_until_s = 0.0
    realtime_factor = 0.0

    def __init__(self, source: str, error: BaseException):
        self.source, self.error = source, error

    def start(self) -> "NotOpened":
        return self

    def stop(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> dict:
        raise self.error

    def __repr__(self) -> str:
        return f"<castfinder.Ingest not opened: {self.source}: {self.error}>"


def _sources(sources) -> list[str]:
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    try:
        items = list(sources)
    except TypeError:
        raise InputError(f"sources must be a list of file paths or URLs, not {type(sources).__name__}") from None
    if not items:
        raise InputError("no sources given")
    out, seen = [], {}
    for i, s in enumerate(items):
        if not isinstance(s, (str, os.PathLike)) or not str(s).strip():
            raise InputError(f"sources[{i}] must be a file path or a URL, not {s!r}")
        s = str(s)
        key = os.path.realpath(s) if os.path.exists(s) else s
        if key in seen:  # one video, two writers: refused before anything runs
            raise InputError(f"{s}: given twice (as source {seen[key] + 1} and {i + 1})")
        seen[key] = i
        out.append(s)
    return out


def start_many(index, sources, force: bool = False,
               progress: Callable[[dict], Any] | None = None) -> list:
    """Open every source at once, each in its own thread, and start each on the index's shared stages
    as soon as it is open: a URL slow to answer (up to its open timeout) delays no other source, before
    or after it in the list. Returns one handle per source, in order: an api.Ingest, or a NotOpened for
    a source that could not be opened. Video ids follow the order the sources opened in. progress(dict)
    gets each source's progress with its "source" added."""
    sources = _sources(sources)
    if progress is not None and not callable(progress):
        raise InputError("progress must be a function taking a dict, or None")
    runs: list = [None] * len(sources)
    unexpected: list[BaseException] = []
    lock = threading.Lock()
    cancelled = threading.Event()

    def open_one(i: int, source: str) -> None:
        report = None if progress is None else (lambda p, s=source: progress({**p, "source": s}))
        try:
            run = index.start_ingest(source, force=force, progress=report, shared=True)
        except CastfinderError as exc:  # this source only: the others still run
            log.info("%s: not ingested: %s", source, exc)
            run = NotOpened(source, exc)
        except BaseException as exc:  # not the source's fault: every source stops, the caller hears it
            with lock:
                unexpected.append(exc)
            cancelled.set()
            return
        with lock:
            runs[i] = run
            late = cancelled.is_set()
        if late:  # the caller gave up while this one was opening
            run.stop()

    threads = [threading.Thread(target=open_one, args=(i, s), name=f"open {s}", daemon=True)
               for i, s in enumerate(sources)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():  # short joins: Ctrl-C reaches this thread while sources open
                t.join(0.2)
    except BaseException:
        _cancel(runs, lock, cancelled)
        raise
    if unexpected:
        _cancel(runs, lock, cancelled)
        raise unexpected[0]
    return runs


def _cancel(runs: list, lock: threading.Lock, cancelled: threading.Event) -> None:
    """Stop every source started so far; one still opening stops itself once open."""
    with lock:
        cancelled.set()
        started = [r for r in runs if r is not None]
    for run in started:
        run.stop()


def record(run) -> dict:
    """A finished handle's summary: IngestResult.record plus "error" (None, or the source's error)."""
    try:
        doc = run.wait()
        doc["error"] = None
        return doc
    except (CastfinderError, RuntimeError, OSError) as exc:
        job = run.job
        if job is not None and job.result is not None:  # it ran and failed: what it indexed stays searchable
            doc = job.result.record(run.source)
        else:
            doc = {"video": run.video, "source": run.source, "status": "failed"}
        doc["status"] = "failed"
        doc["error"] = str(exc)
        doc["exit_code"] = getattr(exc, "exit_code", 1)
        return doc


def ingest_many(index, sources, force: bool = False, progress: Callable[[dict], Any] | None = None,
                close_wait_s: float = 30.0) -> list[dict]:
    """Ingest every source to its end and return one summary per source (see record()). Ctrl-C stops
    them all cleanly (closed shots saved) and raises KeyboardInterrupt."""
    runs = start_many(index, sources, force=force, progress=progress)
    try:
        return [record(run) for run in runs]
    except KeyboardInterrupt:
        for run in runs:
            run.stop()
        for run in runs:
            try:
                run.wait(close_wait_s)
            except Exception:  # interrupted is what the caller hears about
                pass
        raise
