"""One detect stage and one embed stage shared by every ingest attached to them, so that one model
call serves frames of many streams (DeepStream-style batching across sources):

  source 1 ─ inbox (bounded) ─┐                                  ┌─ outbox ─ writer 1
  source 2 ─ inbox (bounded) ─┼─ detect (mixed batch) ─ embed ───┼─ outbox ─ writer 2
  source N ─ inbox (bounded) ─┘                                  └─ outbox ─ writer N

Each ingest keeps its own decode/shot-cutting thread (IngestJob._source_stage) and its own writer
(IngestJob._write_loop); only the model stages are shared. The detect stage gathers round-robin,
starting one source further each time, at most one batch per source per model call, and takes
only what is ready: a source with nothing ready (a stalled live stream) is skipped, never waited
for. A source's inbox is bounded, so a file is read only as fast as the shared stages take its
batches (back-pressure per source), and a source whose writer has fallen behind is skipped until
it catches up. An error in a model call is retried per source, so only the source it belongs to
fails; the others go on.

Per-source results equal a lone ingest's: a source's batches are formed by its own source thread
as before, each keeps its own small-face plan, and items reach its writer in stream order."""

from __future__ import annotations

import logging
import queue
import threading
import time

from castfinder.core.config import IngestConfig

from . import metrics as M
from .pipeline import END, Batch, Models, detect_together, embed_together

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5       # nothing ready anywhere: sleep until a source puts something (or this long)
BUSY_WAIT_S = 0.01      # something is waiting behind a slow writer: look again soon
OUTBOX_LIMIT = 4        # items waiting for a source's writer before its new batches are held back


class _Inbox(queue.Queue):
    """A source's bounded queue into the shared stages; a put wakes the detect stage."""

    def __init__(self, maxsize: int, wake: threading.Event):
        super().__init__(maxsize)
        self._wake = wake

    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout)
        self._wake.set()


class _Outbox(queue.Queue):
    """A source's queue from the shared stages to its writer. Unbounded (it holds vectors, not
    images; the detect stage holds a source back when it grows), so one slow writer never blocks
    the stages for the others. If the stages are gone, the writer gets the end marker instead of
    waiting forever."""

    def __init__(self, stages: "SharedStages", lane: "Lane"):
        super().__init__()
        self._stages, self._lane = stages, lane

    def get(self, block=True, timeout=None):
        while True:
            try:
                return super().get(timeout=0.5)
            except queue.Empty:
                if not self._stages.alive:
                    job = self._lane.job
                    if job.error is None:
                        job.error = RuntimeError("the shared detect/embed stages stopped")
                    job.stop()
                    return END


class Lane:
    """One attached ingest: its inbox, its outbox and its counters."""

    def __init__(self, job, stages: "SharedStages"):
        self.job = job
        self.label = job.label
        self.inbox = _Inbox(stages.queue_size, stages._wake)
        self.outbox = _Outbox(stages, self)
        self.ended = False       # its end marker has gone through
        self.frames = 0          # frames it has had detected


def shared_batching(cfg: IngestConfig, device_type: str) -> int:
    """Most frames in one shared model call. On CPU a call costs about the same per frame whatever
    its size, so a small cap keeps the lag low; a GPU wants big batches (one call takes milliseconds)."""
    value = cfg.shared_batch_size
    if value == "auto":
        return 64 if device_type == "cuda" else 8
    return int(value)


class SharedStages:
    """Start once per process (per set of models); attach ingests with IngestJob.run(stages=this).
    Safe to attach and detach from any thread at any time; close() ends the stage threads."""

    def __init__(self, models: Models, cfg: IngestConfig):
        self.models = models
        device = models.detector.device.type
        self.source_batch, self.queue_size = cfg.batching(device)
        self.max_frames = max(self.source_batch, shared_batching(cfg, device))
        self._lanes: list[Lane] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._to_embed: queue.Queue = queue.Queue(self.queue_size)
        self._threads: list[threading.Thread] = []
        self._turn = 0           # round-robin: the source the next gather starts with
        self.calls = 0           # detect calls made, and the frames and sources they held (for benchmarks)
        self.frames = 0
        self.sources_per_call = 0

    # --- attaching --------------------------------------------------------------------------------
    def attach(self, job) -> Lane:
        lane = Lane(job, self)
        with self._lock:
            if self._closing.is_set():
                raise RuntimeError("these shared stages are closed")
            self._lanes.append(lane)
            if not self._threads:
                self._threads = [threading.Thread(target=self._detect_loop, name="cf-shared-detect", daemon=True),
                                 threading.Thread(target=self._embed_loop, name="cf-shared-embed", daemon=True)]
                for t in self._threads:
                    t.start()
        return lane

    def detach(self, lane: Lane) -> None:
        with self._lock:
            if lane in self._lanes:
                self._lanes.remove(lane)
        try:
            M.SOURCE_QUEUE_DEPTH.remove(lane.label)
        except KeyError:  # never measured
            pass

    @property
    def sources(self) -> int:
        with self._lock:
            return len(self._lanes)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def batch_fill(self) -> float:
        """Mean frames per detect call over the most a call may hold."""
        return self.frames / (self.calls * self.max_frames) if self.calls else 0.0

    def close(self, timeout: float = 10.0) -> None:
        """End the stage threads (ingests still attached are stopped first)."""
        with self._lock:
            lanes = list(self._lanes)
        for lane in lanes:
            lane.job.stop()
        deadline = time.monotonic() + timeout
        while self.sources and time.monotonic() < deadline:
            time.sleep(0.05)
        self._closing.set()
        self._wake.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- the detect stage ---------------------------------------------------------------------------
    def _gather(self) -> list[tuple[Lane, object]]:
        """What is ready, fairly: round-robin from a rotating start, at most one batch per source
        (a second batch of one source would be planned before the first one's faces were seen), and
        the shot events queued in front of it; no more frames than max_frames."""
        with self._lock:
            lanes = [lane for lane in self._lanes if not lane.ended]
        if not lanes:
            return []
        start = self._turn % len(lanes)
        self._turn += 1
        group, frames = [], 0
        for lane in lanes[start:] + lanes[:start]:
            if lane.outbox.qsize() >= OUTBOX_LIMIT:
                continue  # its writer is behind: its frames wait in its own bounded inbox
            while True:
                try:
                    item = lane.inbox.get_nowait()
                except queue.Empty:
                    break
                group.append((lane, item))
                if item is END:
                    lane.ended = True
                    break
                if isinstance(item, Batch):
                    frames += len(item.items)
                    break
            if frames >= self.max_frames:
                break
        return group

    def _detect_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.clear()
            group = self._gather()
            if not group:
                waiting = any(not lane.inbox.empty() for lane in list(self._lanes))
                self._wake.wait(BUSY_WAIT_S if waiting else IDLE_WAIT_S)
                continue
            parts = [(lane.job, item) for lane, item in group if isinstance(item, Batch) and lane.job.error is None]
            if parts:
                frames = sum(len(b.items) for _, b in parts)
                for lane in {id(lane): lane for lane, _ in group}.values():
                    M.SOURCE_QUEUE_DEPTH.labels(lane.label).set(lane.inbox.qsize())
                t0 = time.perf_counter()
                self._guarded(parts, lambda ps: detect_together(self.models.detector, ps))
                M.STAGE_SECONDS.labels("detect").observe(time.perf_counter() - t0)
                M.STAGE_BATCH.labels("detect").observe(frames)
                M.BATCH_FILL.labels("detect").observe(frames / self.max_frames)
                M.BATCH_SOURCES.observe(len({id(job) for job, _ in parts}))
                self.calls += 1
                self.frames += frames
                self.sources_per_call += len({id(job) for job, _ in parts})
            self._to_embed.put(group)
            M.QUEUE_DEPTH.labels("embed").set(self._to_embed.qsize())

    # --- the embed stage ----------------------------------------------------------------------------
    def _embed_loop(self) -> None:
        while True:
            try:
                group = self._to_embed.get(timeout=IDLE_WAIT_S)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            parts = [(lane.job, item) for lane, item in group if isinstance(item, Batch) and lane.job.error is None]
            if parts:
                frames = sum(len(b.items) for _, b in parts)
                t0 = time.perf_counter()
                self._guarded(parts, lambda ps: embed_together(self.models, [b for _, b in ps]))
                M.STAGE_SECONDS.labels("embed").observe(time.perf_counter() - t0)
                M.STAGE_BATCH.labels("embed").observe(frames)
                M.BATCH_FILL.labels("embed").observe(frames / self.max_frames)
            for lane, item in group:  # in the order taken: each source's items stay in stream order
                lane.outbox.put(item)

    def _guarded(self, parts: list, fn) -> None:
        """Run a model call on a mixed batch; if it fails, run each source's part alone, so the
        error ends only the source it belongs to (whose writer reports it), not its neighbours."""
        try:
            fn(parts)
            return
        except BaseException as exc:
            jobs = {id(job): job for job, _ in parts}
            if len(jobs) == 1:
                _fail(next(iter(jobs.values())), exc)
                return
            log.warning("a shared model call over %d sources failed (%s); retrying each alone", len(jobs), exc)
        for key, job in jobs.items():
            own = [(j, b) for j, b in parts if id(j) == key]
            try:
                fn(own)
            except BaseException as exc:
                _fail(job, exc)


def _fail(job, exc: BaseException) -> None:
    if job.error is None:
        job.error = exc
    job.stop()
