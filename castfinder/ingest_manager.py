"""Ingest jobs inside the HTTP service: one thread per job, models shared by all jobs and queries."""

from __future__ import annotations

import logging
import threading

from index.store import IndexStore
from stream import metrics as M
from stream.pipeline import IngestJob, Models, fingerprint

from .config import Config
from .errors import IndexBusyError, NotFoundError

log = logging.getLogger(__name__)


class IngestManager:
    def __init__(self, store: IndexStore, config: Config):
        self.store, self.cfg = store, config
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
            job = IngestJob(source, self.store, self.cfg.ingest, self.models, force=force, cast=self.cfg.cast)
            job.prepare()
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

    def shutdown(self, timeout: float = 30.0) -> None:
        for vid in list(self._threads):
            if self.running(vid):
                self.jobs[vid].stop()
        for t in list(self._threads.values()):
            t.join(timeout=timeout)
