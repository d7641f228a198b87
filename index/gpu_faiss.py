"""FAISS searches on the GPU when this process has a faiss GPU build and a GPU; the CPU otherwise.

The CPU index stays the index of record (it is what is saved, removed from and converted to an IVF);
the GPU holds a mirror used for searching only: built from the CPU index on the first search, kept in
step by every add, and dropped by anything else (a remove, an IVF conversion), to be rebuilt on the
next search. Flat and IVF-Flat indexes move to the GPU (exact inner product, or the same lists and
nprobe); HNSW has no GPU version and stays on the CPU. CASTFINDER_FAISS_GPU=0 keeps everything on
the CPU. Not exercised on this project's CI (no GPU there): there, gpu_resources() is None and
FeatureIndex never makes a mirror."""

from __future__ import annotations

import logging
import os
import threading

import faiss
import numpy as np

log = logging.getLogger(__name__)

_resources = None   # None: not looked for yet; False: no GPU build or no GPU
_resources_lock = threading.Lock()


def gpu_resources():
    """faiss.StandardGpuResources for GPU 0, or None when faiss is a CPU build, sees no GPU, or
    CASTFINDER_FAISS_GPU=0."""
    global _resources
    with _resources_lock:
        if _resources is None:
            _resources = False
            if os.environ.get("CASTFINDER_FAISS_GPU", "1") not in ("0", "off", "false"):
                try:
                    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
                        _resources = faiss.StandardGpuResources()
                        log.info("FAISS searches run on the GPU")
                except Exception as exc:  # a broken CUDA setup: the CPU still works
                    log.warning("faiss GPU build present but unusable (%s); searching on the CPU", exc)
        return _resources or None


class GpuMirror:
    """A search-only GPU copy of one CPU index. Its caller (FeatureIndex) holds its own read lock while
    searching and its write lock while adding or dropping; the mirror's lock serialises GPU calls,
    since a faiss GPU index must not be used from two threads at once."""

    def __init__(self, resources, nprobe: int | None = None):
        self.resources, self.nprobe = resources, nprobe
        self.index = None
        self._lock = threading.Lock()
        self.failed = False   # the index could not be moved (kind not supported): search on the CPU

    def _build(self, cpu_index) -> None:
        try:
            self.index = faiss.index_cpu_to_gpu(self.resources, 0, cpu_index)
        except Exception as exc:  # e.g. HNSW: no GPU version
            log.info("FAISS index %s stays on the CPU: %s", type(cpu_index).__name__, str(exc).splitlines()[0][:200])
            self.failed = True
            return
        if self.nprobe is not None:
            try:
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", self.nprobe)
            except Exception:  # not an IVF
                pass

    def search(self, cpu_index, queries: np.ndarray, k: int):
        """(scores, ids) from the GPU copy, or None when the index cannot live on the GPU."""
        with self._lock:
            if self.index is None and not self.failed:
                self._build(cpu_index)
            if self.index is None:
                return None
            return self.index.search(queries, k)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock:
            if self.index is not None:
                self.index.add_with_ids(vectors, ids)

    def drop(self) -> None:
        with self._lock:
            self.index, self.failed = None, False
