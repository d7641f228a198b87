"""The staged ingest pipeline. Four threads joined by bounded queues (a slow stage makes the
ones before it wait instead of growing memory):

  source:  decode → shots → sample → consecutive dedup
  detect:  MTCNN on batches of frames
  embed:   frame embedders on every kept frame, face embedders on every face
  write:   SQLite commit, then FAISS add (searchable at once), shot bookkeeping, checkpoints

Torch, OpenCV, dlib and FAISS release the GIL, so the stages overlap on separate cores."""

from __future__ import annotations

import logging
import math
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from castfinder.core.config import CastConfig, IngestConfig
from castfinder.core.errors import CastfinderError
from castfinder.index.catalogue import storage_error
from castfinder.index.store import IndexStore
from castfinder.models.mtcnn_detector import MTCNNDetector
from castfinder.models.registry import make_face_embedder, make_frame_embedder

from . import metrics as M
from .dark_frames import equalised, mean_luma
from .decode import VideoDecoder
from .dedup import ConsecutiveDeduplicator, dbscan_keep
from .face_context import context_descriptor
from .face_quality import face_sharpness
from .sampling import ShotSampler
from .shots import FrameInShot, ShotClosed, ShotSegmenter

log = logging.getLogger(__name__)
END = object()


@dataclass
class ShotOpened:
    index: int
    start_frame: int
    start_s: float


@dataclass
class Batch:
    items: list          # (shot_idx, VideoFrame)
    # shot events that happened among these frames, as (number of items before it, event): a batch may
    # span a cut, so short shots do not starve the detector of batch size (which matters on a GPU)
    events: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    records: list = field(default_factory=list)
    decoded_at: float = 0.0  # monotonic time the oldest frame was decoded
    fine: list | None = None  # which frames get the detector's small-face levels (planned once)
    frame_vec: list | None = None  # which frames get frame-embedder vectors (None: all)


@dataclass
class IngestResult:
    video_id: int
    status: str
    reused: bool = False
    shots: int = 0
    frames: int = 0
    faces: int = 0
    vectors: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_dropped: int = 0
    indexed_until_s: float = 0.0
    wall_s: float = 0.0
    damaged_spans: list = field(default_factory=list)
    warning: str | None = None   # done, but e.g. the file ended early

    @property
    def realtime_factor(self) -> float:
        return self.indexed_until_s / self.wall_s if self.wall_s > 0 else 0.0

    def record(self, source: str) -> dict:
        """As a plain dict, the record the CLI's --json, the Python API, the service and Ray jobs print
        (a span still damaged at the end of the file ends at None)."""
        return {"video": self.video_id, "source": source, "status": self.status, "reused": self.reused,
                "shots": self.shots, "frames": self.frames, "faces": self.faces, "vectors": self.vectors,
                "frames_decoded": self.frames_decoded, "frames_sampled": self.frames_sampled,
                "frames_dropped": self.frames_dropped, "indexed_until_s": round(self.indexed_until_s, 3),
                "wall_s": round(self.wall_s, 3), "realtime_factor": round(self.realtime_factor, 3),
                "damaged_spans": [[s, e if e is not None and math.isfinite(e) else None] for s, e in self.damaged_spans],
                "warning": self.warning}


class SmallFacePlanner:
    """Which frames get the detector's fine (small-face) pyramid levels. Most shots of a film show faces
    big enough for the cheap levels; a wide shot or a low-resolution video shows small ones in most of
    its frames. So a shot's first kept frame probes with the fine levels, and so does its next kept frame
    once `every_s` seconds have passed since the last probe; a probe that finds a face below the cheap
    levels' size turns them on for the rest of the shot. Probes are timed in seconds, not counted in kept
    frames: deduplication keeps few frames of a still wide shot, and counting those put its probes ~4 s
    apart. With full_probes off a probe skips the largest fine level (the whole frame at full size, twice
    the rest of the fine levels): it still finds faces from ~12 px, as it only has to tell that the shot
    shows small faces, so probes can come more often for the same time. Used by the detect stage only."""

    def __init__(self, every_s: float, coarse_min_px: float, enabled: bool = True, full_probes: bool = True):
        self.every_s, self.coarse_min_px, self.enabled = every_s, coarse_min_px, enabled
        self.probe_mode = True if full_probes else "probe"
        self.shot, self.last_probe_s, self.small_shot = None, 0.0, False

    def plan(self, items: list[tuple[int, float]]) -> list:
        """items: (shot, time_s) of each kept frame, in order. Per frame, the detector's `fine` flag:
        True (all fine levels), "probe" (all but the largest) or False."""
        out = []
        for shot, time_s in items:
            if shot != self.shot:
                self.shot, self.last_probe_s, self.small_shot = shot, None, False
            probe = self.last_probe_s is None or time_s - self.last_probe_s >= self.every_s - 1e-6
            if probe:
                self.last_probe_s = time_s
            out.append(self.enabled and (True if self.small_shot else self.probe_mode if probe else False))
        return out

    def seen(self, shots: list[int], fine: list, faces: list[list]) -> None:
        for shot, f, found in zip(shots, fine, faces):
            if f and shot == self.shot and any(face.size < self.coarse_min_px for face in found):
                self.small_shot = True


def detect_together(detector, parts: list) -> None:
    """Faces for the batches `parts` ((job, Batch) pairs, of one source or several) in one detector call.
    Each frame keeps its own source's small-face plan, made once per batch (a batch that is run again
    after a failure keeps it), and each batch gets back the faces of its own frames."""
    for job, batch in parts:
        if batch.fine is None:
            batch.fine = job._small_faces.plan([(shot, frame.time_s) for shot, frame in batch.items])
    images = [f.image for _, batch in parts for _, f in batch.items]
    fines = [fine for _, batch in parts for fine in batch.fine]
    faces = detector.detect(images, fines)
    # dark probe frames without a face: a second look at an equalised copy (the chips stay the frame's own)
    limits = [job.cfg.dark_look_luma for job, batch in parts for _ in batch.items]
    again = [i for i, (found, fine, lim) in enumerate(zip(faces, fines, limits))
             if not found and fine and lim > 0 and mean_luma(images[i]) < lim]
    if again:
        for i, found in zip(again, detector.detect([equalised(images[i]) for i in again], [fines[i] for i in again])):
            faces[i] = found
    at = 0
    for job, batch in parts:
        batch.faces = faces[at:at + len(batch.items)]
        M.DARK_LOOKS.labels(job.label).inc(sum(at <= i < at + len(batch.items) for i in again))
        at += len(batch.items)
        job._small_faces.seen([shot for shot, _ in batch.items], batch.fine, batch.faces)
        M.FACES_DETECTED.labels(job.label).inc(sum(len(f) for f in batch.faces))


def scaled_face(face, k: float):
    """The face's box and landmarks on a picture k times the analysis image's size."""
    return replace(face, box=face.box * k, landmarks=face.landmarks * k)


def embed_together(models: "Models", batches: list) -> None:
    """Frame and face vectors for the frames of `batches` (of one source or several) in one call per
    embedder; each batch gets the records of its own frames."""
    images = [f.image for batch in batches for _, f in batch.items]
    faces = [found for batch in batches for found in batch.faces]
    for image, found in zip(images, faces):
        for face in found:
            face.sharpness = face_sharpness(image, face.box)
            if models.face_context:
                face.context = context_descriptor(image, face.box)
    wants = [w for batch in batches for w in (batch.frame_vec or [True] * len(batch.items))]
    # the frames that get frame vectors, in order: each takes the next one
    frame_vecs = {e.name: iter(e.embed_frames([im for im, w in zip(images, wants) if w])) for e in models.frame}
    # faces are found on the analysis image but embedded from the source's own pixels where it has more
    chip_items = []
    for batch in batches:
        for (_, frame), found in zip(batch.items, batch.faces):
            picture, k = frame.chip_image
            chip_items.append((picture, found if k == 1.0 else [scaled_face(f, k) for f in found]))
    face_vecs = {e.name: e.embed_batch(chip_items) for e in models.face}
    i = 0
    for batch in batches:
        for (shot, frame), found in zip(batch.items, batch.faces):
            batch.records.append((shot, frame.index, frame.time_s, found,
                                  {k: next(v) for k, v in frame_vecs.items()} if wants[i] else {},
                                  {k: v[i] for k, v in face_vecs.items()}))
            i += 1
        batch.items = [(s, None) for s, _ in batch.items]  # free the images early


class Models:
    """Loaded once per process and shared by every ingest (no per-video reloads)."""

    def __init__(self, cfg: IngestConfig):
        kw = {"device": cfg.device}
        self.detector = MTCNNDetector(min_face_px=cfg.min_face_px, min_prob=cfg.min_face_prob, device=cfg.device,
                                      thresholds=tuple(cfg.mtcnn_thresholds), small_face_px=cfg.small_face_px)
        self.face = [make_face_embedder(n, weights_dir=cfg.weights_dir, flip=cfg.face_flip, **kw)
                     for n in cfg.face_embedders]
        self.frame = [make_frame_embedder(n, weights_dir=cfg.weights_dir, **kw) for n in cfg.frame_embedders]
        self.face_context = cfg.face_context


def fingerprint(source: str) -> str:
    if os.path.isfile(source):
        st = os.stat(source)
        return f"file:{os.path.abspath(source)}:{st.st_size}:{int(st.st_mtime)}"
    return f"live:{source}:{time.time():.0f}"  # a live source is a new recording each time


class IngestJob:
    def __init__(self, source: str, store: IndexStore, cfg: IngestConfig, models: Models,
                 force: bool = False, progress: Callable[[dict], None] | None = None, cast: CastConfig | None = None,
                 new_video_id: int | None = None, url_policy=None):
        """new_video_id: the id a new video row gets (a sharded index's job numbers all its videos).
        url_policy (stream/url_policy.UrlPolicy): a URL source may lead only under its prefixes."""
        self.source, self.store, self.cfg, self.models = source, store, cfg, models
        self.new_video_id = new_video_id
        self.cast_cfg = cast if cast is not None else CastConfig()
        self._cast = None
        self.force, self.progress = force, progress
        self.stages = None  # shared detect/embed stages to run on (stream/shared_stages.py); None: its own
        self.stop_event = threading.Event()
        # bad input fails here, before any write
        self.decoder = VideoDecoder(source, cfg.analysis_width, max_height=cfg.analysis_max_height,
                                    gpu=cfg.device != "cpu", url_policy=url_policy,  # on a CUDA GPU when there is one
                                    chip_width=cfg.face_chip_width)
        self.info = self.decoder.info
        self.video_id: int | None = None
        self.label = "0"
        self.error: BaseException | None = None
        self.result: IngestResult | None = None
        self.status = "starting"
        self.indexed_until = 0.0
        self.realtime_factor = 0.0
        self.t_started = time.time()

    def stop(self) -> None:
        """Stop cleanly: every closed shot is flushed and saved. A file's open shot stays open (not
        cut short at the stop time), so the next ingest of the file redoes it exactly; a live
        source cannot be resumed, so its open shot is closed."""
        self.stop_event.set()
        self.decoder.stop()

    # --- setup --------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Find or create the video row now (the service answers with its id before the run)."""
        if not hasattr(self, "_plan"):
            self._plan = self._prepare()

    @property
    def already_indexed(self) -> bool:
        """Prepared, and the video is indexed already: run() only reports it (nothing runs)."""
        return getattr(self, "_plan", ()) is None

    def _prepare(self) -> tuple[float, int] | None:
        """Create or find the video row. Returns (start_s, first_shot) or None when reusable."""
        cat = self.store.catalogue
        fp = fingerprint(self.source)
        row = cat.find_video(fp)
        if row is not None and (self.force or row["status"] != "done"):
            self.store.open_features()  # a FAISS file that cannot be opened or rebuilt fails before any delete
        if row is not None and self.force:
            self.store.remove_vectors(cat.delete_video(row["id"]))
            row = None
        if row is not None and row["status"] == "done":
            self.video_id = row["id"]
            return None
        if row is not None:
            # an earlier ingest was killed or stopped: keep its closed shots, redo from the open one
            self.video_id = row["id"]
            closed = [s for s in cat.shots(row["id"]) if s["closed"]]
            first_shot = (closed[-1]["idx"] + 1) if closed else 0
            start_s = closed[-1]["end_s"] if closed else 0.0
            self.store.remove_vectors(cat.delete_from_shot(row["id"], first_shot))
            cat.update_video(row["id"], status="ingesting", error=None)
            log.info("resuming video %s from shot %d (%.2f s)", row["id"], first_shot, start_s)
            return start_s, first_shot
        name = Path(self.source).name if os.path.isfile(self.source) else self.source
        self.video_id = cat.create_video(self.source, fp, name, self.info, {"ingest": self.cfg.__dict__},
                                         video_id=self.new_video_id)
        return 0.0, 0

    # --- stages -------------------------------------------------------------------------------
    def _source_stage(self, out: queue.Queue, start_s: float, first_shot: int) -> None:
        cfg, label = self.cfg, self.label
        try:
            seg = ShotSegmenter(self.info.fps, cfg.shot_detector, cfg.shot_threshold, cfg.shot_min_len_s, first_shot)
            sampler = ShotSampler(cfg.sample_fps)
            dedup = ConsecutiveDeduplicator(cfg.dedup_similarity, enabled=cfg.dedup == "consecutive",
                                            max_gap_s=cfg.dedup_max_gap_s)
        except BaseException as exc:  # the stages and the writer wait for END: never leave them hanging
            self.error, self.dropped = exc, 0
            out.put(END)
            return
        opened = first_shot - 1
        pending: list = []
        pending_events: list = []
        pending_fv: list = []  # per pending frame: does it get frame vectors
        # frame vectors (whole-frame likeness: the scene tail, photos without a face) at their own, lower
        # rate than faces: the first kept frame of each shot, then one per 1/frame_vector_fps seconds
        frame_vec_plan = ShotSampler(cfg.frame_vector_fps) if cfg.frame_vector_fps < cfg.sample_fps else None
        pending_since = 0.0  # when the batch being filled got its first frame
        # live frames come at real time, so a partial batch must not wait long; a file's frames come as
        # fast as they decode, and a short timeout there would only shrink batches
        batch_timeout = cfg.batch_timeout_s if self.info.is_live else cfg.batch_timeout_file_s

        def flush_pending():
            if pending:
                out.put(Batch(list(pending), list(pending_events), decoded_at=pending[0][1].decoded_at,
                              frame_vec=list(pending_fv)))
                pending.clear()
                pending_events.clear()
                pending_fv.clear()

        def emit(event):
            if pending:
                pending_events.append((len(pending), event))
            else:
                out.put(event)

        def handle(events):
            nonlocal opened, pending_since
            for ev in events:
                if isinstance(ev, FrameInShot):
                    if ev.shot != opened:
                        emit(ShotOpened(ev.shot, ev.frame.index, ev.frame.time_s))
                        opened = ev.shot
                    if sampler.keep(ev.shot, ev.frame.time_s):
                        M.FRAMES_SAMPLED.labels(label).inc()
                        self.sampled += 1
                        if dedup.keep(ev.shot, ev.frame.small, ev.frame.time_s):
                            ev.frame.image  # convert now, in this thread, while the decoder frame is alive
                            pending.append((ev.shot, ev.frame))
                            pending_fv.append(frame_vec_plan is None or frame_vec_plan.keep(ev.shot, ev.frame.time_s))
                            if len(pending) == 1:
                                pending_since = time.monotonic()
                            if len(pending) >= self.batch_size or time.monotonic() - pending_since > batch_timeout:
                                flush_pending()
                        else:
                            M.FRAMES_DROPPED.labels(label).inc()
                            ev.frame.release()
                    else:
                        ev.frame.release()
                else:
                    emit(ev)

        # a file is read only as fast as the detector takes batches: a frame decoded while the
        # detector's queue is full would only wait there, and the decode → searchable lag grow
        paced = not self.info.is_live
        try:
            for frame in self.decoder.frames(start_s):
                M.FRAMES_DECODED.labels(label).inc()
                handle(seg.push(frame))
                if paced and out.full():
                    while out.full() and not self.stop_event.is_set():
                        time.sleep(0.005)
                    pending_since = time.monotonic()  # waiting for the detector is not waiting for frames
            if not (self.stop_event.is_set() and not self.info.is_live):
                handle(seg.flush())  # the end (or a stopped live source): close the open shot
            # a stopped file: the frames still in the segmenter belong to the open shot, which is not
            # closed at the stop time (a false cut); resuming redoes it from its start
            flush_pending()
        except BaseException as exc:
            self.error = exc
        finally:
            self.dropped = dedup.dropped
            M.DAMAGED_PACKETS.labels(label).inc(self.decoder.stats.damaged_packets)
            out.put(END)

    def _detect_stage(self, inp: queue.Queue, out: queue.Queue) -> None:
        self._stage_loop(inp, out, "detect", self._detect)

    def _embed_stage(self, inp: queue.Queue, out: queue.Queue) -> None:
        self._stage_loop(inp, out, "embed", self._embed)

    def _stage_loop(self, inp, out, name, fn) -> None:
        while True:
            item = inp.get()
            M.QUEUE_DEPTH.labels(name).set(inp.qsize())
            if item is END:
                out.put(END)
                return
            if isinstance(item, Batch) and self.error is None:
                t0 = time.perf_counter()
                try:
                    fn(item)
                except BaseException as exc:  # stop the source; the writer reports the error
                    self.error = exc
                    self.stop()
                    continue
                M.STAGE_SECONDS.labels(name).observe(time.perf_counter() - t0)
                M.STAGE_BATCH.labels(name).observe(len(item.items))
            out.put(item)

    def _detect(self, batch: Batch) -> None:
        detect_together(self.models.detector, [(self, batch)])

    def _embed(self, batch: Batch) -> None:
        embed_together(self.models, [batch])

    def _write(self, records: list) -> None:
        if not records:
            return
        n = self.store.add_records(self.video_id, records)
        self.vectors += n
        M.VECTORS_INDEXED.labels(self.label, "all").inc(n)

    def _dbscan_filter(self, records: list) -> list:
        """Method 2: keep the frames that own the best face of each face cluster of the shot."""
        if not records or not self.models.face:
            return records
        feature = self.models.face[0].name
        owners, vecs, quality = [], [], []
        for r, rec in enumerate(records):
            for j, face in enumerate(rec[3]):
                owners.append(r)
                vecs.append(rec[5][feature][j])
                quality.append(face.prob * face.size)
        if not vecs:
            return records[:1]
        keep = {owners[k] for k in dbscan_keep(np.stack(vecs), np.array(quality), self.cfg.dbscan_eps)}
        kept = [rec for r, rec in enumerate(records) if r in keep]
        self.dropped += len(records) - len(kept)
        return kept

    # --- run ----------------------------------------------------------------------------------
    def run(self, stages=None) -> IngestResult:
        """Ingest to the end (or a stop). stages: a stream.shared_stages.SharedStages, whose one detect
        and embed stage serve every ingest attached to it (their batches mix frames of all of them);
        None runs on self.stages, if set, else on this ingest's own detect and embed threads."""
        stages = stages if stages is not None else self.stages
        t_start = time.monotonic()
        self.prepare()
        plan = self._plan
        self.label = str(self.video_id)
        if plan is None:
            self.decoder.close()
            self.status = "done"
            self.result = self._summary(reused=True, wall=0.0)
            return self.result
        start_s, first_shot = plan
        self.sampled = self.dropped = self.vectors = 0
        # small_face_probe_every counts sampled frames: 5 at 5 fps is a probe a second
        self._small_faces = SmallFacePlanner(self.cfg.small_face_probe_every / self.cfg.sample_fps,
                                             self.models.detector.min_face_px,
                                             enabled=self.models.detector.small_face_px < self.models.detector.min_face_px,
                                             full_probes=self.cfg.small_face_full_probes)
        self.status = "ingesting"
        self.batch_size, self.queue_size = self.cfg.batching(self.models.detector.device.type)
        self._indexed_until, self._shot_buffer = start_s, []
        self._t_start, self._start_s = t_start, start_s  # for the real-time factor
        lane = None
        if stages is None:
            q1, q2, q3 = (queue.Queue(self.queue_size) for _ in range(3))
            threads = [threading.Thread(target=self._detect_stage, args=(q1, q2), name="cf-detect", daemon=True),
                       threading.Thread(target=self._embed_stage, args=(q2, q3), name="cf-embed", daemon=True)]
        else:
            lane = stages.attach(self)
            q1, q3, threads = lane.inbox, lane.outbox, []
        threads.insert(0, threading.Thread(target=self._source_stage, args=(q1, start_s, first_shot),
                                           name=f"cf-source-{self.label}", daemon=True))
        for t in threads:
            t.start()
        try:
            self._write_loop(q3)
        finally:
            for t in threads:
                t.join(timeout=30)
            if lane is not None:
                stages.detach(lane)
            self.decoder.close()
        return self._finish(time.monotonic() - t_start)

    def _write_loop(self, inp: queue.Queue) -> None:
        """The writer: batches and shot events in stream order, until the source's end marker."""
        while True:
            item = inp.get()
            M.QUEUE_DEPTH.labels("write").set(inp.qsize())
            if item is END:
                break
            if self.error is not None:
                continue  # drain so the stages can finish
            t0 = time.perf_counter()
            try:
                self._write_item(item)
            except Exception as exc:  # the writer failed: stop the source and drain, as for a stage error
                self.error = exc
                self.stop()
                continue
            M.STAGE_SECONDS.labels("write").observe(time.perf_counter() - t0)

    def _finish(self, wall: float) -> IngestResult:
        """Record how the ingest ended on the video row; raise its error, if it had one."""
        cat = self.store.catalogue
        stats = self.decoder.stats
        if self.error is not None:
            status = "failed"
            M.INGEST_ERRORS.labels(type(self.error).__name__).inc()
        elif self.stop_event.is_set():
            status = "stopped"
        else:
            status = "done"
        indexed_until = self._indexed_until
        note = str(self.error)[:500] if self.error is not None else self._ended_early(status)
        cat.update_video(self.video_id, status=status, indexed_until_s=indexed_until,
                         frames_decoded=stats.frames, frames_sampled=self.sampled, frames_dropped=self.dropped,
                         damaged_packets=stats.damaged_packets, damaged_spans=stats.damaged_spans, error=note)
        self.store.checkpoint(force=True)
        self.status = status
        self.result = self._summary(reused=False, wall=wall)
        if self.error is not None:
            if isinstance(self.error, CastfinderError):
                raise self.error
            if isinstance(self.error, sqlite3.Error):  # the catalogue failed (damaged, disk full, read-only)
                raise storage_error(self.error, cat.path) from self.error
            raise RuntimeError(f"ingest failed: {self.error}") from self.error
        return self.result

    def _ended_early(self, status: str) -> str | None:
        """A file whose frames stop well before the duration its header gives (truncated, or
        unreadable from there on): it is done, but not all of it was there to index."""
        end, duration = self.decoder.stats.last_time_s, self.info.duration_s
        if status != "done" or self.info.is_live or not duration or end is None:
            return None
        end += 1.0 / self.info.fps
        if end >= duration - max(1.0, 3.0 / self.info.fps):
            return None
        log.info("%s: file ended early at %.1f s of %.1f s", self.source, end, duration)
        return f"file ended early at {end:.1f} s of {duration:.1f} s (truncated?)"

    def _write_item(self, item) -> None:
        """One batch (frames and the cuts among them, in stream order) or one shot event."""
        if not isinstance(item, Batch):
            self._take_event(item)
            return
        done = 0
        for before, event in item.events:  # in stream order: frames, cut, frames
            self._take_records(item.records[done:before])
            self._take_event(event)
            done = before
        self._take_records(item.records[done:])
        if item.records:
            if self.cfg.dedup != "dbscan":
                M.FRESHNESS_SECONDS.observe(time.monotonic() - item.decoded_at)
            self.store.catalogue.update_video(self.video_id, indexed_until_s=self._indexed_until)
        self._report()

    def _take_records(self, records: list) -> None:
        if not records:
            return
        if self.cfg.dedup == "dbscan":
            self._shot_buffer.extend(records)  # filtered when the shot closes
        else:
            self._write(records)
        self._indexed_until = max(self._indexed_until, records[-1][2])

    def _take_event(self, event) -> None:
        cat = self.store.catalogue
        if isinstance(event, ShotOpened):
            cat.open_shot(self.video_id, event.index, event.start_frame, event.start_s)
        elif isinstance(event, ShotClosed):
            if self.cfg.dedup == "dbscan":
                self._write(self._dbscan_filter(self._shot_buffer))
                self._shot_buffer = []
            cat.close_shot(self.video_id, event.shot)
            self._grow_cast(event.shot.index)
            self._indexed_until = max(self._indexed_until, event.shot.end_s)
            M.SHOTS_CLOSED.labels(self.label).inc()
            self._report()
            self.store.checkpoint(every_s=self.cfg.checkpoint_every_s)

    def _grow_cast(self, shot: int) -> None:
        """The closed shot's face tracks join the cast (a live broadcast shows its cast growing)."""
        if not self.cast_cfg.enabled or not self.models.face:
            return
        try:
            if self._cast is None:
                from castfinder.index.cast import Cast, params_from_config
                self._cast = Cast(self.store, params_from_config(self.cast_cfg, self.models.face[0].name))
            self._cast.on_shot_closed(self.video_id, shot)
        except Exception as exc:  # the cast is a by-product: never fail an ingest for it
            log.warning("cast update failed for shot %d: %s", shot, exc)

    def _report(self) -> None:
        indexed_until = self._indexed_until
        wall = max(1e-6, time.monotonic() - self._t_start)
        rtf = (indexed_until - self._start_s) / wall
        M.REALTIME_FACTOR.labels(self.label).set(rtf)
        M.INDEXED_SECONDS.labels(self.label).set(indexed_until)
        M.SOURCE_FPS.labels(self.label).set(self.decoder.stats.frames / wall)
        M.record_gpu()
        self.indexed_until = indexed_until
        self.realtime_factor = rtf
        if self.progress:
            self.progress({"video_id": self.video_id, "indexed_until_s": indexed_until, "realtime_factor": rtf,
                           "duration_s": self.info.duration_s, "frames_decoded": self.decoder.stats.frames,
                           "vectors": self.vectors})

    def _summary(self, reused: bool, wall: float) -> IngestResult:
        row = self.store.catalogue.video(self.video_id)
        counts = self.store.catalogue.counts(self.video_id)
        import json
        return IngestResult(self.video_id, row["status"], reused, counts["shots"], counts["frames"], counts["faces"],
                            counts["vectors"], row["frames_decoded"], row["frames_sampled"], row["frames_dropped"],
                            row["indexed_until_s"] or 0.0, wall, json.loads(row["damaged_spans"] or "[]"),
                            row["error"] if row["status"] == "done" else None)
