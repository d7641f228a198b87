"""An index directory: catalogue.sqlite plus faiss/<feature>.index, opened for reading or writing."""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from castfinder.core.errors import IndexUnwritableError, InputError, NotFoundError
from castfinder.core.paths import hold_pid_lock

from .catalogue import Catalogue, storage_error
from .vector_map import VectorMap
from .vector_store import FeatureIndex

log = logging.getLogger(__name__)


def _unwritable(directory: Path, exc: OSError) -> IndexUnwritableError:
    return IndexUnwritableError(f"{directory}: cannot write the index folder ({exc.strerror or exc}); check its "
                                f"permissions and free space, or use another --index")


class IndexStore:
    def __init__(self, directory: str | Path, writable: bool = False, kind: str = "flat"):
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"{self.dir}: exists and is not a directory")
        db = self.dir / "catalogue.sqlite"
        if not writable and not db.exists():
            raise NotFoundError(f"{self.dir}: no index here (run `castfinder ingest SOURCE --index {self.dir}` first)")
        self._lock_file = None
        self.writable = writable
        if writable:
            try:
                (self.dir / "faiss").mkdir(parents=True, exist_ok=True)
                self._take_writer_lock()
            except OSError as exc:
                raise _unwritable(self.dir, exc) from None
        try:
            if db.exists() and db.stat().st_size == 0 and any((self.dir / "faiss").glob("*.index")):
                # SQLite would make a fresh empty catalogue of it: every video would be forgotten
                raise storage_error(sqlite3.DatabaseError("empty (0 bytes) although faiss/ holds vectors"), db)
            self.catalogue = Catalogue(db, writable=writable)
            self.kind = kind if writable else self.catalogue.get_meta("index_kind", kind)
            if writable and self.catalogue.get_meta("index_kind") != self.kind:  # no write unless it changes
                self.catalogue.set_meta("index_kind", self.kind)
        except BaseException:
            self._release_writer_lock()
            raise
        self.features: dict[str, FeatureIndex] = {}
        self._features_lock = threading.Lock()
        # commit + FAISS add as one step: ids reach FAISS in commit order, which is what lets an add
        # skip ids it already holds (two ingests of one service write through here)
        self._write_lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self._checkpoint_lock = threading.Lock()  # several writers (ingests of one process) save one at a time
        # a shard's ids start at its base (index/shards.py); an ordinary index's at 0
        self.vector_map = VectorMap(int((self.catalogue.get_meta("shard") or {}).get("id_base", 0)))
        self._track_vectors: dict = {}

    def _take_writer_lock(self) -> None:
        self._lock_file = hold_pid_lock(self.dir / ".writer.lock",
                                        f"{self.dir}: another process (pid {{pid}}) is writing this index")

    def feature(self, name: str, dim: int | None = None) -> FeatureIndex:
        """The FAISS index of a feature: its checkpoint, topped up from the catalogue on first use;
        rebuilt from the catalogue when the file is damaged or disagrees with it."""
        with self._features_lock:
            if name in self.features:
                return self.features[name]
            dims = self.catalogue.get_meta("feature_dims", {})
            if dim is None:
                if name not in dims:
                    raise NotFoundError(f"feature '{name}' is not in this index (indexed: {', '.join(dims) or 'none'})")
                dim = dims[name]
            elif name not in dims:
                dims[name] = dim
                self.catalogue.set_meta("feature_dims", dims)
            path = self.dir / "faiss" / f"{name}.index"
            index = FeatureIndex(path, dim, self.kind)
            rebuild = False
            if index.damage:
                log.warning("%s: %s; rebuilding it from the catalogue", path, index.damage)
                rebuild = True
            elif index.max_id >= 0:
                _, max_id = self.catalogue.feature_stats(name)
                # the checkpoint must hold exactly the catalogue's vectors up to its highest id: more
                # (rolled back, or deleted since the save) or fewer (repeated or lost) means rebuild
                held = self.catalogue.feature_count(name, index.max_id)
                if index.max_id > max_id or index.ntotal != held:
                    log.info("%s: %d vectors up to id %d, the catalogue has %d; rebuilding it from the catalogue",
                             path, index.ntotal, index.max_id, held)
                    rebuild = True
            if rebuild:
                index = FeatureIndex(path, dim, self.kind, load=False)
            for ids, vecs in self.catalogue.vectors_after(name, index.max_id):
                index.add(ids, vecs)
            if rebuild and self.writable:
                self._save(index)  # readers after us use the repaired checkpoint
            self.features[name] = index
            return index

    def open_features(self) -> None:
        """Open (and repair) every feature's FAISS index now: what can fail, fails before any change."""
        for name in list(self.indexed_features()):
            self.feature(name)

    def indexed_features(self) -> dict[str, int]:
        return self.catalogue.get_meta("feature_dims", {})

    def for_video(self, video_id: int) -> "IndexStore":
        """The store holding a video: this one (a sharded index answers with the video's shard)."""
        return self

    def track_vectors(self, feature: str):
        """The face tracks of `feature` in memory, synced with the catalogue (every closed shot's)."""
        from .track_vectors import TrackVectors
        with self._features_lock:
            tv = self._track_vectors.setdefault(feature, TrackVectors(feature))
        tv.sync(self.catalogue)
        return tv

    def add_records(self, video_id: int, records: list) -> int:
        """Commit frames/faces/vectors to SQLite, then make them searchable in FAISS."""
        with self._write_lock:
            return self._add_records(video_id, records)

    def _add_records(self, video_id: int, records: list) -> int:
        rows = self.catalogue.add_frames(video_id, records)
        by_feature: dict[str, tuple[list, list]] = {}
        for feature, vid, vec in rows:
            ids, vecs = by_feature.setdefault(feature, ([], []))
            ids.append(vid)
            vecs.append(vec)
        for feature, (ids, vecs) in by_feature.items():
            self.feature(feature, len(vecs[0])).add(np.array(ids, np.int64), np.stack(vecs))
        return len(rows)

    def remove_vectors(self, vector_ids: list[int]) -> None:
        if not vector_ids:
            return
        ids = np.array(vector_ids, np.int64)
        self.vector_map.forget(ids)
        for name in list(self.indexed_features()):
            index = self.feature(name)
            try:
                index.remove(ids)
            except NotImplementedError:  # HNSW: rebuild this feature from the catalogue
                with self._features_lock:
                    self.features.pop(name, None)
                    index.path.unlink(missing_ok=True)
                self.feature(name)

    def checkpoint(self, force: bool = False, every_s: float = 10.0) -> None:
        with self._checkpoint_lock:  # two savers of one file would replace it while the other writes it
            if force or time.monotonic() - self._last_checkpoint >= every_s:
                for index in list(self.features.values()):
                    self._save(index)
                self._last_checkpoint = time.monotonic()

    def _save(self, index: FeatureIndex) -> None:
        # a checkpoint only saves rebuilding time: failing to write one must not fail an ingest
        try:
            index.save()
        except (OSError, RuntimeError) as exc:
            log.warning("%s: checkpoint not saved (%s); it is rebuilt from the catalogue when next opened",
                        index.path, getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200])

    def refresh(self) -> None:
        """Readers in another process: pick up vectors committed since the last look."""
        for name, index in list(self.features.items()):
            for ids, vecs in self.catalogue.vectors_after(name, index.max_id):
                index.add(ids, vecs)

    def _release_writer_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def close(self) -> None:
        if self._lock_file is not None:
            self.checkpoint(force=True)
            self._release_writer_lock()
