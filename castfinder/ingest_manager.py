"""Ingest jobs inside the HTTP service: one thread per job, models shared by all jobs and queries."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

from castfinder.index.store import IndexStore
from castfinder.stream import metrics as M
from castfinder.stream.pipeline import IngestJob, Models, fingerprint

from .core.config import Config
from .core.errors import CastfinderError, IndexBusyError, NotFoundError

log = logging.getLogger(__name__)


# --- the file an ingest read, and only that file, may be read again for playback and thumbnails -----
def _meta_key(video_id: int) -> str:
    return f"media_file_{video_id}"


def record_media(store: IndexStore, video_id: int, source: str) -> None:
    """Remember which file (device, inode, size, mtime) video `video_id` was read from."""
    try:
        st = os.stat(source)
    except OSError:
        return  # a live source: nothing to remember
    if stat.S_ISREG(st.st_mode):
        store.catalogue.set_meta(_meta_key(video_id), {
            "path": os.path.realpath(source), "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns})


def media_file(store: IndexStore, row) -> int:
    """A read-only descriptor of the file the video was ingested from, or NotFoundError when that file
    is gone or is no longer the same one (replaced, rewritten, or swapped for a symlink or a FIFO).
    Videos indexed before identities were recorded are checked against the fingerprint's size and mtime."""
    gone = NotFoundError(f"video {row['id']}: the file it was indexed from is gone or has been replaced; "
                         "nothing to read")
    ident = store.catalogue.get_meta(_meta_key(row["id"]))
    if ident is None:
        kind, _, rest = (row["fingerprint"] or "").partition(":")
        path, size, mtime = (rest.rsplit(":", 2) + ["", ""])[:3] if kind == "file" else ("", "", "")
        if not path or not size.isdigit() or not mtime.lstrip("-").isdigit():
            raise gone
    else:
        path = ident["path"]
    try:
        # O_NOFOLLOW: a symlink put in its place is refused; O_NONBLOCK: a FIFO cannot hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise gone from None
    st = os.fstat(fd)
    if ident is None:
        same = stat.S_ISREG(st.st_mode) and st.st_size == int(size) and int(st.st_mtime) == int(mtime)
    else:
        same = (stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                == (ident["dev"], ident["ino"], ident["size"], ident["mtime_ns"]))
    if not same:
        os.close(fd)
        raise gone
    return fd


class TooManyIngestsError(CastfinderError):
    """Every ingest slot of the service is taken."""

    http_status = 429
    exit_code = 4


class IngestManager:
    def __init__(self, store: IndexStore, config: Config, max_running: int = 4):
        self.store, self.cfg = store, config
        self.max_running = max_running  # each ingest is 3 threads and a decoder: clients cannot start unbounded many
        self.jobs: dict[int, IngestJob] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        self._models: Models | None = None
        self._models_lock = threading.Lock()

    @property
    def models(self) -> Models:
        with self._models_lock:
            if self._models is None:
                self._models = Models(self.cfg.ingest)
            return self._models

    def start(self, source: str, force: bool = False) -> tuple[IngestJob, bool]:
        """Open the source (bad input raises here), create the video row and start ingesting.
        Returns (job, started): started is False when the file was already indexed (reused)."""
        if not self.store.writable:
            raise IndexBusyError(f"{self.store.dir}: another process writes this index; this server can only search it")
        with self._lock:
            row = self.store.catalogue.find_video(fingerprint(source))
            if row is not None and self.running(row["id"]):
                raise IndexBusyError(f"video {row['id']} ({source}) is already being ingested")
            reuse = row is not None and row["status"] == "done" and not force
            running = sum(self.running(vid) for vid in list(self._threads))
            if not reuse and running >= self.max_running:
                raise TooManyIngestsError(f"{running} ingests are running, the most this server runs at once; "
                                          "try again when one has finished (or stop one: DELETE /videos/ID)")
            job = IngestJob(source, self.store, self.cfg.ingest, self.models, force=force, cast=self.cfg.cast)
            job.prepare()
            record_media(self.store, job.video_id, source)
            if job._plan is None:  # already indexed: nothing to run
                job.run()
                return job, False
            thread = threading.Thread(target=self._run, args=(job,), name=f"cf-ingest-{job.video_id}", daemon=True)
            self.jobs[job.video_id] = job
            self._threads[job.video_id] = thread
            thread.start()
            return job, True

    def _run(self, job: IngestJob) -> None:
        M.INGESTS_RUNNING.inc()
        try:
            job.run()
        except Exception as exc:  # recorded on the video row (status failed, error); the service lives on
            log.warning("ingest of video %s failed: %s", job.video_id, exc)
        finally:
            M.INGESTS_RUNNING.dec()

    def running(self, video_id: int) -> bool:
        t = self._threads.get(video_id)
        return t is not None and t.is_alive()

    def job(self, video_id: int) -> IngestJob | None:
        return self.jobs.get(video_id)

    def stop(self, video_id: int) -> bool:
        if self.store.catalogue.video(video_id) is None:
            raise NotFoundError(f"no video with id {video_id}")
        if not self.running(video_id):
            return False
        self.jobs[video_id].stop()
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every ingest (each closes its shot and flushes); `timeout` bounds the whole wait, so
        a server asked to stop ends in seconds whatever its sources do."""
        for vid in list(self._threads):
            if self.running(vid):
                self.jobs[vid].stop()
        deadline = time.monotonic() + timeout
        for vid, t in list(self._threads.items()):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("ingest of video %s did not stop in %.0f s; leaving it (it resumes from its last "
                            "closed shot)", vid, timeout)
