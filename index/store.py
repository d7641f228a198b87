"""An index directory: catalogue.sqlite plus faiss/<feature>.index, opened for reading or writing."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import numpy as np

from castfinder.errors import IndexBusyError, InputError, NotFoundError

from .catalogue import Catalogue
from .vector_map import VectorMap
from .vector_store import FeatureIndex


class IndexStore:
    def __init__(self, directory: str | Path, writable: bool = False, kind: str = "flat"):
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"{self.dir}: exists and is not a directory")
        if not writable and not (self.dir / "catalogue.sqlite").exists():
            raise NotFoundError(f"{self.dir}: no index here (run `castfinder ingest SOURCE --index {self.dir}` first)")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "faiss").mkdir(exist_ok=True)
        self._lock_file = None
        self.writable = writable
        if writable:
            self._take_writer_lock()
        self.catalogue = Catalogue(self.dir / "catalogue.sqlite")
        self.kind = kind if writable else self.catalogue.get_meta("index_kind", kind)
        if writable:
            self.catalogue.set_meta("index_kind", self.kind)
        self.features: dict[str, FeatureIndex] = {}
        self._features_lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self.vector_map = VectorMap()

    def _take_writer_lock(self) -> None:
        path = self.dir / ".writer.lock"
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise IndexBusyError(f"{self.dir}: another process (pid {f.read().strip() or '?'}) is writing this index") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def feature(self, name: str, dim: int | None = None) -> FeatureIndex:
        """The FAISS index of a feature, reconciled with the catalogue on first use."""
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
            count, max_id = self.catalogue.feature_stats(name)
            if index.max_id > max_id or index.ntotal > count:
                # the file has vectors the catalogue lost (rolled back): rebuild from the catalogue
                index = FeatureIndex(path, dim, self.kind, load=False)
            for ids, vecs in self.catalogue.vectors_after(name, index.max_id):
                index.add(ids, vecs)
            self.features[name] = index
            return index

    def indexed_features(self) -> dict[str, int]:
        return self.catalogue.get_meta("feature_dims", {})

    def add_records(self, video_id: int, records: list) -> int:
        """Commit frames/faces/vectors to SQLite, then make them searchable in FAISS."""
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
        if force or time.monotonic() - self._last_checkpoint >= every_s:
            for index in list(self.features.values()):
                index.save()
            self._last_checkpoint = time.monotonic()

    def refresh(self) -> None:
        """Readers in another process: pick up vectors committed since the last look."""
        for name, index in list(self.features.items()):
            for ids, vecs in self.catalogue.vectors_after(name, index.max_id):
                index.add(ids, vecs)

    def close(self) -> None:
        if self._lock_file is not None:
            self.checkpoint(force=True)
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
