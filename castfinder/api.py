"""The Python API: one `Index` object over an index directory, for scripts and notebooks.

    import castfinder
    with castfinder.open_index("friends.idx") as idx:
        idx.ingest("video.mp4")
        found = idx.query(photos=["ross1.jpg", "ross2.jpg"])

Every method returns the plain records the CLI prints with --json (`query` is exactly the documented
query JSON), and every error is one of castfinder.core.errors. The CLI's ingest, query, videos, shots and
cast commands and the HTTP service (`castfinder serve`, one Index per server) go through this module; it
wraps the pipeline, the store, the query engine and the cast and holds no logic of its own beyond
checking arguments.

Heavy modules (torch, FAISS, PyAV) are imported on first use, so `import castfinder` stays light."""

from __future__ import annotations

import atexit
import copy
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

from .core.errors import CastfinderError, IndexBusyError, InputError, NotFoundError, TooManyIngestsError

log = logging.getLogger(__name__)

MAX_ID = 2**63 - 1          # SQLite integers: a larger id cannot exist
MAX_TOP_K = MAX_LIMIT = 100_000
CLOSE_WAIT_S = 30.0         # close(): how long to wait for a stopped ingest to flush


# --- argument checks: one line naming the argument, raised before any work ----------------------------
def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{what} must be True or False, not {value!r}")
    return value


def _whole(value, what: str, lo: int, hi: int, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    # bool is an int in Python, and True as a video id is a bug in the caller
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be a whole number, not {value!r}")
    if not lo <= value <= hi:
        raise InputError(f"{what} {value} is out of range (allowed: {lo} to {hi})")
    return value


def _ident(value, what: str, allow_none: bool = False) -> int | None:
    return _whole(value, what, 1, MAX_ID, allow_none)


def _text(value, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _url_policy(prefixes):
    """url_prefixes as a castfinder.stream.url_policy.UrlPolicy (None: every URL may be read)."""
    if prefixes is None:
        return None
    if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
        raise InputError("url_prefixes must be a list of URL prefixes (strings), or None")
    from castfinder.stream.url_policy import UrlPolicy
    try:
        return UrlPolicy(prefixes)
    except ValueError as exc:
        raise InputError(f"url_prefixes: {exc}") from None


def _out_dir(value, what: str) -> Path:
    from .core.paths import writable_dir  # the same check (created, proven writable) as the CLI's options
    if not isinstance(value, (str, os.PathLike)):
        raise InputError(f"{what} must be a folder path, not {type(value).__name__}")
    return writable_dir(value, what)


def _load_config(config, device: str | None, weights_dir: str | None):
    from .core.config import Config, load_config, validate

    overrides = {k: v for k, v in (("device", device), ("weights_dir", weights_dir)) if v is not None}
    if isinstance(weights_dir, os.PathLike):
        overrides["weights_dir"] = str(weights_dir)
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)  # the caller's object stays as it was
        for key, value in overrides.items():
            setattr(cfg.ingest, key, value)
        return validate(cfg, "config")
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise InputError(f"config must be a preset name, a YAML path or a castfinder.core.config.Config, "
                         f"not {type(config).__name__}")
    return load_config(str(config) if config is not None else None, {"ingest": overrides} if overrides else None)


# --- records: what the CLI prints with --json ---------------------------------------------------------
def video_record(row, counts: dict, run: "Ingest | None" = None) -> dict:
    """A video as the CLI's `videos --json` and the service's GET /videos show it. `run`: this Index's
    latest ingest of it, if any (a running one is ahead of the catalogue: its progress counts)."""
    running = run is not None and run.running
    until = max(row["indexed_until_s"] or 0.0, run.indexed_until_s if running else 0.0)
    duration = row["duration_s"]
    return {"id": row["id"], "name": row["name"], "source": row["source"], "status": row["status"],
            "live": bool(row["is_live"]), "running": running, "duration_s": duration,
            "indexed_until_s": round(until, 3), "progress": round(min(1.0, until / duration), 4) if duration else None,
            "realtime_factor": round(run.job.realtime_factor, 3) if run is not None else None,
            "shots": counts["shots"], "frames": counts["frames"], "faces": counts["faces"], "vectors": counts["vectors"],
            "frames_decoded": row["frames_decoded"], "frames_sampled": row["frames_sampled"],
            "frames_dropped": row["frames_dropped"], "damaged_spans": json.loads(row["damaged_spans"] or "[]"),
            "error": row["error"]}


def shot_record(s) -> dict:
    return {"shot": s["idx"], "start_s": s["start_s"], "end_s": s["end_s"], "frames": s["n_frames"],
            "faces": s["n_faces"], "closed": bool(s["closed"])}


# --- query photos -------------------------------------------------------------------------------------
def _photo(item, i: int):
    """A photo as the query engine takes it: (name, RGB array or the file's bytes, content digest or None)."""
    from .querying import digest

    label = f"photos[{i}]"
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):  # (name, photo): named so
        _, image, key = _photo(item[1], i)
        return item[0], image, key
    if isinstance(item, (str, os.PathLike)):
        from castfinder.models.photo import load_photo
        return str(item), load_photo(item), None   # as the CLI: named by its path
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        return label, data, digest(data)            # decoded by the engine unless its vectors are cached
    import numpy as np
    from PIL import Image, ImageOps

    from castfinder.models.photo import MAX_PIXELS, MAX_SIDE
    if isinstance(item, Image.Image):
        item = np.asarray(ImageOps.exif_transpose(item).convert("RGB"))
    if not isinstance(item, np.ndarray):
        raise InputError(f"{label}: expected a file path, the file's bytes or an RGB array, not {type(item).__name__}")
    if item.dtype != np.uint8:
        raise InputError(f"{label}: expected uint8 pixels (0-255), not {item.dtype}")
    if item.ndim == 2:
        item = np.repeat(item[:, :, None], 3, axis=2)   # grey
    if item.ndim != 3 or item.shape[2] not in (3, 4) or 0 in item.shape:
        raise InputError(f"{label}: expected an H x W x 3 RGB array, not shape {item.shape}")
    if item.shape[0] * item.shape[1] > MAX_PIXELS:
        raise InputError(f"{label}: image too large ({item.shape[1]}x{item.shape[0]})")
    image = np.ascontiguousarray(item[:, :, :3])
    if max(image.shape[:2]) > MAX_SIDE:  # scaled down as a photo file is (detection does not need more)
        im = Image.fromarray(image)
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        image = np.asarray(im).copy()
    return label, image, digest(image.tobytes() + str(image.shape).encode())


def _photos(photos) -> list:
    if photos is None:
        return []
    # one photo passed on its own (a path string would otherwise be read as a list of characters)
    if isinstance(photos, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(photos, "shape") \
            or type(photos).__module__.startswith("PIL."):
        photos = [photos]
    try:
        items = list(photos)
    except TypeError:
        raise InputError(f"photos must be a list of paths, bytes or RGB arrays, not {type(photos).__name__}") from None
    return [_photo(p, i) for i, p in enumerate(items)]


def _clear_errors(method):
    """SQLite errors from below (a catalogue damaged or unwritable mid-call) become the castfinder error
    the CLI prints, so callers only ever catch castfinder.core.errors."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            from castfinder.index.catalogue import storage_error
            raise storage_error(exc, self.path / "catalogue.sqlite") from None
    return wrapper


# --- ingest -------------------------------------------------------------------------------------------
class Ingest:
    """An ingest started by `Index.start_ingest`. It runs in a thread of its own; the index can be
    searched meanwhile. `wait()` returns the summary `Index.ingest` returns; `stop()` stops it cleanly
    (closed shots saved; a file's next ingest resumes from the shot that was open)."""

    def __init__(self, index: "Index", job, source: str):
        self._index, self.job, self.source = index, job, source
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._summary: dict | None = None
        self.started_at: float | None = None   # time.monotonic() when it started running

    @property
    def video(self) -> int:
        return self.job.video_id

    @property
    def is_live(self) -> bool:
        return self.job.info.is_live

    @property
    def duration_s(self) -> float | None:
        return self.job.info.duration_s

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def indexed_until_s(self) -> float:
        return self.job.indexed_until

    @property
    def realtime_factor(self) -> float:
        return self.job.realtime_factor

    @property
    def reused(self) -> bool:
        """The source was indexed already: nothing runs, wait() reports the stored counts."""
        return self.job.already_indexed

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def start(self) -> "Ingest":
        if self._thread is None:
            self.started_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=f"cf-api-ingest-{self.video}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        from castfinder.stream import metrics as M
        M.INGESTS_RUNNING.inc()
        try:
            self._summary = self.job.run().record(self.source)
        except BaseException as exc:  # handed to whoever waits (also recorded on the video: failed, error)
            self._error = exc
            log.info("ingest of video %s failed: %s", self.video, exc)
        finally:
            M.INGESTS_RUNNING.dec()
            self._done.set()

    def stop(self) -> None:
        self.job.stop()

    def wait(self, timeout: float | None = None) -> dict:
        """The summary once the ingest has ended (re-raises its error); TimeoutError after `timeout` s."""
        if self._thread is None:
            raise InputError("this ingest has not been started: call start() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        # short waits: Ctrl-C and signal handlers of the waiting thread run at once
        while not self._done.wait(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"video {self.video} is still being ingested after {timeout:g} s")
        if self._error is not None:
            raise self._error
        return dict(self._summary)

    def __repr__(self) -> str:
        return f"<castfinder.Ingest video={self.video} {self.status} until {self.indexed_until_s:.1f} s: {self.source}>"


# --- the index ----------------------------------------------------------------------------------------
_OPEN: "weakref.WeakSet[Index]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """A script that ends with an ingest still running stops it cleanly rather than cutting it off."""
    for index in list(_OPEN):
        try:
            index.close()
        except Exception as exc:  # exiting anyway
            log.warning("closing %s: %s", index.path, exc)


def open_index(path: str | os.PathLike, config=None, writable: bool | None = None, device: str | None = None,
               weights_dir: str | os.PathLike | None = None, max_ingests: int | None = None,
               url_prefixes=None) -> "Index":
    """Open the index directory `path` (created by the first ingest).

    config: a preset name in configs/, a YAML path, or a castfinder.core.config.Config (default: "default").
    writable: None (default) reads, and takes the writer lock on the first call that writes (ingest,
    name_cluster, cast of a finished video) until close(); True takes it now (IndexBusyError when
    another process writes the index); False never writes. Reading works while another process writes.
    device: "auto", "cpu" or "cuda" for the models; weights_dir: local weights for hub models.
    max_ingests: at most this many ingests running at once (start_ingest beyond raises TooManyIngestsError;
    a source already indexed takes no slot); None: no limit.
    url_prefixes: URL sources only under these (scheme://host[:port]/path), and nothing they lead to
    (redirects, HLS playlists and segments) outside them: SourceForbiddenError; an empty list allows no
    URL. None (default): any URL."""
    return Index(path, config=config, writable=writable, device=device, weights_dir=weights_dir,
                 max_ingests=max_ingests, url_prefixes=url_prefixes)


class Index:
    """An index directory. Models are loaded once, on first use (ingest and query models separately,
    as the CLI's commands load them). Safe to use from several threads."""

    def __init__(self, path, config=None, writable: bool | None = None, device: str | None = None,
                 weights_dir=None, max_ingests: int | None = None, url_prefixes=None):
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise InputError(f"index path must be a folder path, not {path!r}")
        if writable not in (None, True, False):
            raise InputError(f"writable must be None, True or False, not {writable!r}")
        self.path = Path(path)
        self.config = _load_config(config, device, weights_dir)
        self.max_ingests = _whole(max_ingests, "max_ingests", 1, 10_000)
        self.url_policy = _url_policy(url_prefixes)
        self._writable = writable
        self._lock = threading.RLock()          # the store and the query engine
        self._ingest_lock = threading.Lock()    # one ingest set up at a time (model loading)
        self._opening = 0                       # ingests whose source is being opened (each holds a slot)
        self._recluster_lock = threading.Lock() # a batch clustering of a long film is seconds of CPU: one at a time
        self._store = None
        self._engine_ = None
        self._models = None                     # the ingest models
        self._stages = None                     # detect/embed stages shared by ingests (stream/shared_stages.py)
        self._runs: dict[int, Ingest] = {}      # the latest ingest of each video this Index ran
        self._counts: dict[tuple, dict] = {}    # counts of finished videos (a page polls them every few seconds)
        self._closed = False
        try:
            if writable:
                self._open_writer()
            elif writable is False or (self.path / "catalogue.sqlite").exists() or self._sharded():
                self._open_reader()  # a damaged catalogue is reported now
            elif self.path.exists() and not self.path.is_dir():
                raise InputError(f"{self.path}: exists and is not a directory")
        except sqlite3.Error as exc:
            from castfinder.index.catalogue import storage_error
            raise storage_error(exc, self.path / "catalogue.sqlite") from None
        _OPEN.add(self)

    # --- the store: a reader until something must be written --------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InputError(f"{self.path}: this index has been closed")

    def _sharded(self) -> bool:
        """The folder holds shards written by `castfinder ingest --ray` (index/shards.py): searched as one."""
        from castfinder.index.shards import is_sharded
        return is_sharded(self.path)

    def _open_reader(self):
        from castfinder.index.shards import open_store
        with self._lock:
            self._check_open()
            if self._store is None:
                self._store = open_store(self.path)  # NotFoundError when there is no index yet
            return self._store

    def _open_writer(self, what: str = "write it", kind: str | None = None):
        from castfinder.index.shards import open_store
        with self._lock:
            self._check_open()
            if self._store is not None and self._store.writable:
                return self._store
            if self._writable is False:
                raise InputError(f"{self.path}: cannot {what}: the index was opened with writable=False")
            # an index keeps the FAISS kind it was made with unless an ingest says otherwise (as the CLI)
            if kind is None:
                kind = self._store.kind if self._store is not None else self.config.ingest.index_kind
            # the reader is dropped, not closed: a query on another thread may still be using it
            self._store = open_store(self.path, writable=True, kind=kind)  # a sharded index: InputError
            return self._store

    def _engine(self):
        store = self._open_reader()
        with self._lock:
            if self._engine_ is None or self._engine_.store is not store:
                from .querying import QueryEngine
                engine = QueryEngine(store, self.config)
                if self._engine_ is not None:  # reader became writer: keep the models already loaded
                    engine._models.update(self._engine_._models)
                self._engine_ = engine
            return self._engine_

    @property
    def writable(self) -> bool:
        """Whether this Index holds the writer lock now."""
        return self._store is not None and self._store.writable

    @property
    def sharded(self) -> bool:
        """A sharded index (DIR/shards/, written by `castfinder ingest --ray` jobs only)."""
        return self._sharded()

    # --- ingest -----------------------------------------------------------------------------------
    @_clear_errors
    def start_ingest(self, source: str | os.PathLike, force: bool = False,
                     progress: Callable[[dict], Any] | None = None, start: bool = True,
                     shared: bool = False) -> Ingest:
        """Open `source` (a file, rtsp://, http(s)://, udp://, or "-" for stdin), load the models, create
        or find its video and start ingesting it in a thread; returns at once with an `Ingest`.
        A file already indexed is reused unless force=True; one that was stopped resumes.
        progress(dict) is called from the ingest thread with indexed_until_s, realtime_factor,
        duration_s, frames_decoded and vectors. start=False returns it prepared but not running
        (call .start()), e.g. to install signal handlers first. shared=True runs it on this Index's shared
        detect/embed stages, whose model calls mix the frames of every shared ingest (ingest_many)."""
        if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
            raise InputError(f"source must be a file path or a URL, not {source!r}")
        source, force, shared = str(source), _flag(force, "force"), _flag(shared, "shared")
        if progress is not None and not callable(progress):
            raise InputError("progress must be a function taking a dict, or None")
        store = self._open_writer("ingest", kind=None if self.writable else self.config.ingest.index_kind)
        from castfinder.stream.pipeline import IngestJob, Models, fingerprint

        from .media import record_media
        key = fingerprint(source)

        def check(opening: int) -> None:  # under _ingest_lock
            row = store.catalogue.find_video(key)
            if row is not None and self.running(row["id"]) is not None:
                raise IndexBusyError(f"video {row['id']} ({source}) is already being ingested")
            reuse = row is not None and row["status"] == "done" and not force
            running = sum(r.running for r in self._runs.values()) + opening
            if not reuse and self.max_ingests is not None and running >= self.max_ingests:
                raise TooManyIngestsError(f"{running} ingests are running, the most this index runs at once; try "
                                          "again when one has finished (or stop one)")

        with self._ingest_lock:
            check(self._opening)
            self._opening += 1  # a slot held while the source opens
        try:
            # the source is opened first, outside the lock: bad input is reported before seconds of model
            # loading, and a URL slow to answer (up to its open timeout) holds up no other ingest
            job = IngestJob(source, store, self.config.ingest, None, force=force, progress=progress,
                            cast=self.config.cast, url_policy=self.url_policy)
        finally:
            with self._ingest_lock:
                self._opening -= 1
        with self._ingest_lock:
            try:
                check(self._opening)  # the same source started by another caller meanwhile
                if self._models is None:
                    self._models = Models(self.config.ingest)
                job.models = self._models
                job.prepare()
                record_media(store, job.video_id, source)  # playback and thumbnails read only this very file
            except BaseException:
                job.decoder.close()
                raise
            run = Ingest(self, job, source)
            if shared:
                job.stages = self._shared_stages()
            if not run.reused or job.video_id not in self._runs:  # a reuse keeps the real run's numbers
                self._runs[job.video_id] = run
            if start:  # inside the lock: a second caller counts this one as running
                run.start()
        return run

    def ingest(self, source: str | os.PathLike, force: bool = False,
               progress: Callable[[dict], Any] | None = None) -> dict:
        """Ingest `source` to its end (a live one: until stop() or Ctrl-C) and return the summary:
        video, status, reused, shots, frames, faces, vectors, frames decoded/sampled/dropped,
        indexed_until_s, wall_s, realtime_factor, damaged_spans, warning (e.g. the file ended early).
        Ctrl-C stops it cleanly (closed shots saved) and raises KeyboardInterrupt."""
        run = self.start_ingest(source, force=force, progress=progress)
        try:
            return run.wait()
        except KeyboardInterrupt:
            run.stop()
            try:
                run.wait(CLOSE_WAIT_S)
            except Exception:  # interrupted is what the caller hears about
                pass
            raise

    def _shared_stages(self):
        """The detect/embed stages shared by this Index's ingests (made with the models, on first use)."""
        if self._stages is None:
            from castfinder.stream.shared_stages import SharedStages
            self._stages = SharedStages(self._models, self.config.ingest)
        return self._stages

    def start_ingest_many(self, sources, force: bool = False,
                          progress: Callable[[dict], Any] | None = None) -> list:
        """Start ingesting every source (files, URLs, live streams, mixed) together: each its own video,
        searchable as its shots close, all sharing one detect and one embed stage. Returns one Ingest per
        source, in order; a source that could not be opened gets one that has already failed (wait()
        raises its error). progress(dict) gets each source's progress with "source" added."""
        from .multi_ingest import start_many
        return start_many(self, sources, force=_flag(force, "force"), progress=progress)

    def ingest_many(self, sources, force: bool = False, progress: Callable[[dict], Any] | None = None) -> list[dict]:
        """Ingest every source together to its end; one summary per source, in order, as ingest() gives
        plus "error": None, or the source's error (its status "failed"). A failing source never stops the
        others. Ctrl-C stops them all cleanly and raises KeyboardInterrupt."""
        from .multi_ingest import ingest_many
        return ingest_many(self, sources, force=_flag(force, "force"), progress=progress, close_wait_s=CLOSE_WAIT_S)

    def running(self, video: int) -> Ingest | None:
        """The ingest of `video` this Index is running now, or None."""
        run = self._runs.get(video)
        return run if run is not None and run.running else None

    def ingesting(self) -> list[int]:
        """The videos this Index is ingesting now."""
        return [vid for vid, run in list(self._runs.items()) if run.running]

    def stop(self, video: int | None = None) -> bool:
        """Stop the ingest of `video` (None: every ingest this Index runs); each saves its closed shots
        and ends soon after. Returns whether one was running; NotFoundError for an unknown video."""
        if video is not None:
            video = self._row(video)["id"]
        stopped = False
        for run in [self.running(video)] if video is not None else list(self._runs.values()):
            if run is not None and run.running:
                run.stop()
                stopped = True
        return stopped

    @_clear_errors
    def remove(self, video: int, timeout: float = 60.0) -> dict:
        """Remove a video, its shots and its vectors from the index (a running ingest of it is stopped
        first). Takes the writer lock."""
        video = _ident(video, "video")
        self.video(video)
        store = self._open_writer("remove a video")
        run = self.running(video)
        if run is not None:
            run.stop()
            run._thread.join(timeout)
            if run.running:
                raise IndexBusyError(f"video {video} is still stopping after {timeout:g} s; try again")
        store.remove_vectors(store.catalogue.delete_video(video))
        store.checkpoint(force=True)
        self._runs.pop(video, None)
        return {"id": video, "status": "deleted"}

    # --- reading ----------------------------------------------------------------------------------
    def _record(self, store, row) -> dict:
        run = self._runs.get(row["id"])
        running = run is not None and run.running
        key = (row["id"], row["status"], row["indexed_until_s"])
        counts = None if running else self._counts.get(key)
        if counts is None:
            counts = store.catalogue.counts(row["id"])
            if not running and row["status"] in ("done", "stopped", "failed"):
                self._counts[key] = counts
        return video_record(row, counts, run)

    @_clear_errors
    def videos(self) -> list[dict]:
        """Every video: id, name, source, status, live, running (an ingest of this Index), duration_s,
        indexed_until_s, progress, realtime_factor, counts, frames decoded/sampled/dropped, damaged_spans, error."""
        store = self._open_reader()
        return [self._record(store, r) for r in store.catalogue.videos()]

    def _row(self, video):
        video = _ident(video, "video")
        row = self._open_reader().catalogue.video(video)
        if row is None:
            raise NotFoundError(f"no video with id {video}")
        return row

    @_clear_errors
    def video(self, video: int) -> dict:
        return self._record(self._open_reader(), self._row(video))

    @_clear_errors
    def shots(self, video: int) -> list[dict]:
        """The shots of a video: shot, start_s, end_s, frames, faces, closed."""
        self._row(video)
        return [shot_record(s) for s in self._open_reader().catalogue.shots(video)]

    @_clear_errors
    def query(self, photos=None, character: str | None = None, video: int | None = None,
              features: str | None = None, both: bool | None = None, top_k: int | None = None,
              fusion: str | None = None, limit: int | None = None, expand: bool = False,
              thumbnails: str | os.PathLike | None = None, refs: bool = False) -> dict:
        """Find the shots where a character appears. photos: file paths, the files' bytes, RGB uint8
        arrays (H x W x 3) or PIL images, each alone or as a (name, photo) pair that names it in the
        answer; none: `character` names a cast cluster. Returns the query JSON (README: Querying):
        character, video, indexed_until_s, fusion, queries, results. Options as the CLI's: features
        "face=NAME,frame=NAME", both, top_k (1-100000), fusion, limit (0 = all), expand; thumbnails: a
        folder for one JPEG per result (video<V>_shot<NNNN>.jpg). refs=True adds to each result the ids
        of its best frame and face (frame_id, face_id; see thumbnail())."""
        from castfinder.index.fusion import METHODS

        character = _text(character, "character")
        video = _ident(video, "video", allow_none=True)
        features = _text(features, "features")
        both = None if both is None else _flag(both, "both")
        top_k = _whole(top_k, "top_k", 1, MAX_TOP_K)
        limit = _whole(limit, "limit", 0, MAX_LIMIT)
        expand = _flag(expand, "expand")
        refs = _flag(refs, "refs")
        if fusion is not None and fusion not in METHODS:
            raise InputError(f"unknown fusion {fusion!r} (known: {', '.join(METHODS)})")
        if thumbnails is not None:
            thumbnails = _out_dir(thumbnails, "thumbnails")
        store = self._open_reader()
        decoded = _photos(photos)
        engine = self._engine()
        if not store.writable:
            store.refresh()  # vectors another process committed since the last query
        # both=False means the preset's choice, as an absent --both does
        doc, hits = engine.query(decoded, character=character, video_id=video, features=features,
                                 use_both=both or None, top_k=top_k, fusion=fusion, limit=limit, expand=expand)
        if thumbnails is not None:
            from .thumbnails import write_thumbnails
            write_thumbnails(store, hits, thumbnails)
        if refs:
            for r, h in zip(doc["results"], hits):
                r["frame_id"], r["face_id"] = h.best_frame_id, h.best_face_id
        return doc

    # --- the cast ---------------------------------------------------------------------------------
    def _cast_store(self, recluster: bool):
        if self.writable:
            return self._store
        if recluster:
            return self._open_writer("recluster the cast")
        if self._writable is False or self._sharded():  # shards' casts are built by their ingest workers
            return self._open_reader()
        try:  # a finished video's cast is built (and stored) on first look
            return self._open_writer("build the cast")
        except IndexBusyError:  # another process writes: show the clusters as it left them
            return self._open_reader()

    @_clear_errors
    def cast(self, video: int | None = None, recluster: bool = False, sheets: bool | str | os.PathLike = False) -> list[dict]:
        """The characters found without photos, per video (all, or one): video, name, status, clusters
        (cluster, name, tracks, shots, screen_time_s, first_s, threshold, faces), sheet. recluster runs
        the batch clustering again (names are kept). sheets=True writes contact sheets under
        INDEX/cast/video<N>/, a path writes them there."""
        video = _ident(video, "video", allow_none=True)
        recluster = _flag(recluster, "recluster")
        if not isinstance(sheets, bool):
            sheets = _out_dir(sheets, "sheets")
        store = self._cast_store(recluster)
        if sheets is True:
            sheets = store.dir / "cast"
        cast = self._engine().cast()
        rows = [store.catalogue.video(video)] if video else store.catalogue.videos()
        if video and rows[0] is None:
            raise NotFoundError(f"no video with id {video}")
        if recluster and not self._recluster_lock.acquire(blocking=False):
            raise IndexBusyError("a recluster is already running; try again when it has finished")
        try:
            docs = self._cast_docs(store, cast, rows, recluster, sheets)
        finally:
            if recluster:
                self._recluster_lock.release()
        return docs

    def _cast_docs(self, store, cast, rows, recluster: bool, sheets) -> list[dict]:
        docs = []
        for row in rows:
            vid = row["id"]
            clusters = cast.current(vid, recluster=recluster) if store.writable else cast.clusters(vid)
            overview = None
            if clusters and sheets:
                from .contact_sheet import cluster_sheet, overview_sheet
                folder = Path(sheets) / f"video{vid}"
                for cl in clusters:
                    p = cluster_sheet(store, cl, folder / f"cluster{cl['cluster']}.png")
                    cl["sheet"] = str(p) if p else None
                overview = overview_sheet(store, clusters, folder / "cast.png")
            docs.append({"video": vid, "name": row["name"], "status": row["status"], "clusters": clusters,
                         "sheet": str(overview) if overview else None})
        return docs

    def _cluster_video(self, cluster: int, video: int | None = None) -> tuple[int, int]:
        """(cluster, its video), or NotFoundError when there is no such cluster (or it is not `video`'s)."""
        cluster = _ident(cluster, "cluster")
        video = _ident(video, "video", allow_none=True)
        cast = self._engine().cast()  # makes the cast tables of an index that has none yet
        owner = cast.cluster_video(cluster)  # a sharded index: asked of the shard the id names
        if owner is None or (video is not None and owner != video):
            raise NotFoundError(f"video {video} has no cluster {cluster}" if video is not None
                                else f"no cluster with id {cluster} (see `castfinder cast`)")
        return cluster, owner

    @_clear_errors
    def cluster(self, cluster: int, video: int | None = None) -> dict:
        """One cast cluster as cast() lists it, as stored (nothing is clustered again). NotFoundError
        when there is no such cluster (or it is not `video`'s)."""
        cluster, vid = self._cluster_video(cluster, video)
        found = [c for c in self._engine().cast().clusters(vid) if c["cluster"] == cluster]
        if not found:  # a cluster without faces to show is not listed
            raise NotFoundError(f"cluster {cluster} has no faces to show")
        return found[0]

    @_clear_errors
    def cluster_sheet(self, cluster: int, path: str | os.PathLike, video: int | None = None) -> Path:
        """Write the contact sheet of a cluster's best faces (PNG) to `path`, re-read from the very file
        its video was ingested from; NotFoundError when that file is gone, replaced or live."""
        from .contact_sheet import cluster_sheet
        record = self.cluster(cluster, video)
        vid = self._cluster_video(cluster, video)[1]
        os.close(self.open_media(vid))
        written = cluster_sheet(self._open_reader(), record, Path(path))
        if written is None:
            raise NotFoundError(f"video {vid}: the source cannot be re-read for faces")
        return written

    @_clear_errors
    def name_cluster(self, cluster: int, name: str, video: int | None = None) -> dict:
        """Name a cast cluster; then query(character=name) finds it without photos. NameTakenError when
        another cluster has that name; video given: NotFoundError unless the cluster is that video's."""
        cluster = _ident(cluster, "cluster")
        if not isinstance(name, str) or not name.strip():
            raise InputError("a cluster name must be a non-empty string")
        if self._sharded():  # named in the shard holding it, under that shard's writer lock for the moment
            if video is not None:
                self._cluster_video(cluster, video)
            cast = self._engine().cast()
            return {"cluster": cluster, "video": cast.store.name_cluster(cluster, name, cast.p), "name": name.strip()}
        if video is not None:
            self._cluster_video(cluster, video)
        store = self._open_writer("name a cluster")
        self._engine().cast().name(cluster, name)
        row = store.catalogue.conn.execute("SELECT video_id FROM clusters WHERE id=?", (cluster,)).fetchone()
        return {"cluster": cluster, "video": row[0], "name": name.strip()}

    # --- the media an ingest read ------------------------------------------------------------------
    @_clear_errors
    def open_media(self, video: int) -> int:
        """A read-only file descriptor (the caller closes it) of the very file `video` was ingested
        from; NotFoundError when it is a live source, or the file is gone or has been replaced since."""
        from .media import media_file
        row = self._row(video)
        if row["is_live"]:
            raise NotFoundError(f"video {row['id']} is a live source: there is no file to read")
        return media_file(self._open_reader(), row)

    @_clear_errors
    def thumbnail(self, video: int, shot: int, frame: int | None = None, face: int | None = None,
                  cache_dir: str | os.PathLike | None = None, on_write: Callable | None = None) -> bytes:
        """JPEG of a shot: `frame` (default: the frame with its largest face), `face` boxed (a face of
        that shot, and of that frame when given), re-read from the very file the video was ingested from.
        cache_dir: thumbnails are kept there (on_write(path, size) hears of each new file)."""
        from .thumbnails import shot_thumbnail
        row = self._row(video)
        shot = _whole(shot, "shot", 0, MAX_ID, allow_none=False)
        frame = _whole(frame, "frame", 0, MAX_ID)
        face = _whole(face, "face", 0, MAX_ID)
        store = self._open_reader()
        if face is not None:
            # only a face of that shot (and frame): any other id would only mint new cache files
            ok = store.for_video(row["id"]).catalogue.conn.execute(
                "SELECT 1 FROM faces fc JOIN frames f ON f.id=fc.frame_id WHERE fc.id=? AND f.video_id=? AND f.shot_idx=?"
                + (" AND f.id=?" if frame is not None else ""),
                (face, row["id"], shot, *((frame,) if frame is not None else ()))).fetchone()
            if ok is None:
                raise NotFoundError(f"face {face} is not in shot {shot} of video {row['id']}"
                                    + (f", frame {frame}" if frame is not None else ""))
        os.close(self.open_media(row["id"]))
        data = shot_thumbnail(store, row["id"], shot, frame, face, cache_dir=cache_dir, on_write=on_write)
        if data is None:
            raise NotFoundError(f"video {row['id']}: the source cannot be re-read for a thumbnail")
        return data

    # --- health -----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the query models, read the FAISS files and compile the fusion code now, so that the
        first query does not wait for them."""
        from castfinder.index.fusion import warm_up as warm_fusion
        try:
            self._engine().warm_up()
        except sqlite3.Error as exc:
            from castfinder.index.catalogue import storage_error
            raise storage_error(exc, self.path / "catalogue.sqlite") from None
        warm_fusion()

    def problems(self) -> list[str]:
        """What stops the index from being read or searched now, one line each (empty: all is well).
        Never raises: a damaged index is what it reports."""
        import numpy as np
        try:
            store = self._open_reader()
            store.catalogue.videos()  # every shard's, in a sharded index
            features = store.indexed_features()
        except CastfinderError as exc:
            return [str(exc)]
        except Exception as exc:
            log.error("catalogue unreadable: %s", exc)
            return ["catalogue.sqlite cannot be read (damaged or missing)"]
        problems = []
        for name, dim in features.items():
            try:
                store.feature(name).search(np.zeros((1, int(dim)), np.float32), 1)
            except CastfinderError as exc:
                problems.append(str(exc))
            except Exception as exc:  # FAISS's C++ words stay in the log
                log.error("feature %s cannot be searched: %s", name, exc)
                problems.append(f"the search index of feature '{name}' cannot be read or searched "
                                f"(faiss/{name}.index damaged?)")
        return problems

    # --- lifetime ---------------------------------------------------------------------------------
    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Stop running ingests (closed shots saved; waiting `timeout` s at most for all of them), save
        the FAISS checkpoints, release the writer lock."""
        if self._closed:
            return
        self.stop()
        deadline = time.monotonic() + timeout
        for run in list(self._runs.values()):
            if run._thread is not None:
                run._thread.join(max(0.0, deadline - time.monotonic()))
                if run.running:
                    log.warning("ingest of video %s did not stop in %.0f s; it resumes from its last closed shot",
                                run.video, timeout)
            else:
                run.job.decoder.close()  # prepared, never started
        if self._stages is not None:
            self._stages.close(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
            store, self._store, self._engine_ = self._store, None, None
        _OPEN.discard(self)
        if store is not None:
            try:
                store.close()
            except sqlite3.Error as exc:
                from castfinder.index.catalogue import storage_error
                raise storage_error(exc, self.path / "catalogue.sqlite") from None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("writer" if self.writable else "reader")
        return f"<castfinder.Index {str(self.path)!r} ({state}, config {self.config.name!r})>"


__all__ = ["open_index", "Index", "Ingest"]
