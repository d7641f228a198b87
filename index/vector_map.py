"""Vector id → (video, shot) in memory, so a search turns thousands of FAISS hits into shot scores
with numpy instead of thousands of SQLite lookups. Loaded from the catalogue incrementally: ids
only grow, and FAISS only returns ids already committed there."""

from __future__ import annotations

import threading

import numpy as np


class VectorMap:
    def __init__(self, base: int = 0):
        # a shard's ids start at its base (index/shards.py): the arrays hold ids from there on
        self.base = base
        self.video = np.full(0, -1, np.int32)
        self.shot = np.full(0, -1, np.int32)
        self.loaded_upto = -1  # highest vector id read from the catalogue
        self._lock = threading.Lock()

    def sync(self, catalogue) -> None:
        """Read the vectors committed since the last sync."""
        with self._lock:
            rows = catalogue.conn.execute(
                "SELECT v.id, v.video_id, f.shot_idx FROM vectors v JOIN frames f ON f.id=v.frame_id WHERE v.id>?"
                " ORDER BY v.id", (self.loaded_upto,)).fetchall()
            if not rows:
                return
            arr = np.array([tuple(r) for r in rows], np.int64)
            top = int(arr[-1, 0])
            pos = arr[:, 0] - self.base
            if top - self.base >= len(self.video):  # grow geometrically; readers keep the old arrays meanwhile
                size = max(top - self.base + 1, 2 * len(self.video), 1024)
                video, shot = np.full(size, -1, np.int32), np.full(size, -1, np.int32)
                video[:len(self.video)], shot[:len(self.shot)] = self.video, self.shot
                video[pos], shot[pos] = arr[:, 1], arr[:, 2]
                self.video, self.shot = video, shot
            else:
                self.video[pos], self.shot[pos] = arr[:, 1], arr[:, 2]
            self.loaded_upto = top

    def forget(self, ids) -> None:
        pos = np.asarray(ids, np.int64) - self.base
        pos = pos[(pos >= 0) & (pos < len(self.video))]
        self.video[pos] = -1
        self.shot[pos] = -1

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(video, shot) per id; -1 where unknown (removed, or -1 padding from FAISS)."""
        video, shot = self.video, self.shot  # one consistent pair even if sync swaps them
        ids = np.asarray(ids, np.int64)
        pos = ids - self.base
        ok = (ids >= 0) & (pos >= 0) & (pos < len(video))
        safe = np.where(ok, pos, 0)
        return np.where(ok, video[safe], -1), np.where(ok, shot[safe], -1)
