"""One FAISS index per feature name, ids = catalogue vector ids, guarded by a reader/writer lock.

The SQLite catalogue is the source of truth (it holds every vector); the FAISS file is a cache
saved at checkpoints. On open, vectors the file lacks (a killed ingest) are appended from the
catalogue, and a file with ids the catalogue lacks is rebuilt, so nothing is lost or doubled.
Catalogue ids only grow, so adding is idempotent: ids up to the highest one held are skipped."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import faiss
import numpy as np

from .gpu_faiss import GpuMirror, gpu_resources
from .rwlock import RWLock

ADD_CHUNK = 256  # vectors per write-lock hold: searches wait at most one chunk
IVF_TRAIN_AT = 20_000  # ivf: exact search until this many vectors, then train the coarse quantizer once
IVF_NPROBE = 16
GPU_MAX_K = 2048  # faiss's GPU indexes return at most this many hits per query; more are searched on the CPU

log = logging.getLogger(__name__)


def _new_index(dim: int, kind: str) -> faiss.Index:
    if kind in ("flat", "ivf"):  # ivf starts flat: it cannot be trained before vectors arrive
        base = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efSearch = 128
    else:
        raise ValueError(f"unknown index kind '{kind}' (flat, hnsw, ivf)")
    return faiss.IndexIDMap2(base)


class FeatureIndex:
    def __init__(self, path: Path, dim: int, kind: str = "flat", load: bool = True):
        """load=False starts empty even if a file exists (it is overwritten at the next save).
        A file that cannot be used (damaged, another dimension, repeated ids) also starts empty:
        `damage` says why, and the caller refills it from the catalogue."""
        self.path = Path(path)
        self.dim, self.kind = dim, kind
        self.lock = RWLock()
        self._add_lock = threading.Lock()  # the max_id check and the add are one step (two adders never double)
        self.max_id = -1
        self.damage: str | None = None
        self.index = _new_index(dim, kind)
        # a search-only copy on the GPU when faiss is a GPU build and sees one (index/gpu_faiss.py)
        resources = gpu_resources() if kind != "hnsw" else None
        self._gpu = GpuMirror(resources, IVF_NPROBE) if resources is not None else None
        if load and self.path.exists():
            try:
                index = faiss.read_index(str(self.path))  # already the concrete class (a downcast proxy would not own it)
            except (RuntimeError, MemoryError) as exc:  # truncated or junk: FAISS raises from C++
                log.debug("%s: %s", self.path, exc)
                self.damage = "not a readable FAISS index (truncated or overwritten?)"
                return
            ids = _ids_of(index)
            if index.d != dim:
                self.damage = f"dimension {index.d}, expected {dim}"
            elif ids is None or len(ids) != index.ntotal:
                self.damage = f"unexpected index type {type(index).__name__}"
            elif len(ids) and len(np.unique(ids)) != len(ids):
                self.damage = f"{len(ids) - len(np.unique(ids))} repeated ids"
            else:
                self.index = index
                if isinstance(index, faiss.IndexIVF):
                    index.nprobe = IVF_NPROBE
                self.max_id = int(ids.max()) if len(ids) else -1

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Add the vectors whose ids are past the highest one held (the others are here already:
        a catch-up from the catalogue may have brought them). Returns how many were added."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._add_lock:
            new = ids > self.max_id
            if not new.all():
                ids, vectors = ids[new], np.ascontiguousarray(vectors[new])
            for i in range(0, len(ids), ADD_CHUNK):
                with self.lock.write():
                    self.index.add_with_ids(vectors[i:i + ADD_CHUNK], ids[i:i + ADD_CHUNK])
                    if self._gpu is not None:
                        self._gpu.add(ids[i:i + ADD_CHUNK], vectors[i:i + ADD_CHUNK])
            if len(ids):
                self.max_id = max(self.max_id, int(ids.max()))
            if self.kind == "ivf" and not self.is_trained_ivf and self.index.ntotal >= IVF_TRAIN_AT:
                self._convert_to_ivf()
        return len(ids)

    @property
    def is_trained_ivf(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    def _convert_to_ivf(self) -> None:
        """Train an IVF on the vectors so far and move them into it. Searches keep using the flat
        index during training; only the swap takes the write lock. Later vectors go to the IVF's
        lists without retraining (a film's faces do not drift far from its first 20k)."""
        with self.lock.read():
            n = self.index.ntotal
            flat = faiss.downcast_index(self.index.index)
            vectors = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim).copy()
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # FAISS wants >= 39 training points per list
        # the IVF keeps our ids in its inverted lists itself: an IDMap over an IVF cannot remove ids
        # (index_factory: the IVF owns its quantizer; a Python-made one would be freed under it)
        new = faiss.index_factory(self.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        new.train(vectors)
        new.nprobe = IVF_NPROBE
        new.add_with_ids(vectors, ids)
        with self.lock.write():  # called under the add lock, so nothing arrived meanwhile
            self.index = new
            if self._gpu is not None:
                self._gpu.drop()

    def remove(self, ids: np.ndarray) -> None:
        if self.kind == "hnsw":  # HNSW cannot remove: the caller rebuilds from the catalogue
            raise NotImplementedError
        with self._add_lock, self.lock.write():  # not while an IVF conversion copies the vectors
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            if self._gpu is not None:
                self._gpu.drop()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self.lock.read():
            k = min(k, max(1, self.index.ntotal))
            if self.index.ntotal == 0:
                return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            found = self._gpu.search(self.index, queries, k) if self._gpu is not None and k <= GPU_MAX_K else None
            scores, ids = found if found is not None else self.index.search(queries, k)
        return scores, ids

    def save(self) -> None:
        """Write the checkpoint atomically (a reader or a crash sees the old file or the new one).
        Its ids come from the index itself: no sidecar file can disagree with it."""
        tmp = self.path.with_suffix(".tmp")
        with self._add_lock, self.lock.read():  # reading the index is fine alongside searches
            faiss.write_index(self.index, str(tmp))
        os.replace(tmp, self.path)
        self.path.with_suffix(".json").unlink(missing_ok=True)  # older versions kept ntotal/max_id there


def _ids_of(index: faiss.Index) -> np.ndarray | None:
    """The ids an index holds (IDMap over flat/HNSW, or an IVF keeping them in its lists)."""
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(index.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return None
