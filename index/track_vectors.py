"""Face tracks in memory for search: one vector per track (its best faces, quality-weighted), with
its video and shot. The cast fills the `tracks` table as each shot closes, so a query sees the
tracks of every closed shot while ingest goes on. Read incrementally (track ids only grow); a
deletion (a resumed ingest, a removed video) makes the next sync read everything again."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np


class TrackVectors:
    def __init__(self, feature: str):
        self.feature = feature
        self.ids = np.zeros(0, np.int64)
        self.video = np.zeros(0, np.int64)
        self.shot = np.zeros(0, np.int64)
        self.vecs = np.zeros((0, 0), np.float32)
        self._lock = threading.Lock()

    def sync(self, catalogue) -> None:
        with self._lock:
            try:
                count, top = catalogue.conn.execute(
                    "SELECT COUNT(*), COALESCE(MAX(id), -1) FROM tracks WHERE feature=? AND vec IS NOT NULL",
                    (self.feature,)).fetchone()
            except sqlite3.OperationalError:  # no cast tables yet (cast disabled, or nothing closed)
                return
            have = len(self.ids)
            last = int(self.ids[-1]) if have else -1
            if count == have and top == last:
                return
            full = count < have or (have and top < last)
            after = -1 if full else last
            rows = catalogue.conn.execute(
                "SELECT id, video_id, shot_idx, vec FROM tracks WHERE feature=? AND vec IS NOT NULL AND id>?"
                " ORDER BY id", (self.feature, after)).fetchall()
            if not rows and not full:
                return
            ids = np.array([r[0] for r in rows], np.int64)
            video = np.array([r[1] for r in rows], np.int64)
            shot = np.array([r[2] for r in rows], np.int64)
            vecs = np.stack([np.frombuffer(r[3], np.float32) for r in rows]) if rows else None
            if full or not have:
                self.ids, self.video, self.shot = ids, video, shot
                self.vecs = vecs if vecs is not None else np.zeros((0, 0), np.float32)
            else:  # new arrays, so a reader holding the old ones keeps a consistent set
                self.ids = np.concatenate([self.ids, ids])
                self.video = np.concatenate([self.video, video])
                self.shot = np.concatenate([self.shot, shot])
                self.vecs = np.concatenate([self.vecs, vecs])

    def shot_scores(self, queries: np.ndarray, video_id: int | None = None):
        """For each query vector: (shot keys, best track similarity per shot), keys as in search
        ((video << 32) | shot)."""
        ids, video, shot, vecs = self.ids, self.video, self.shot, self.vecs
        out = []
        if len(ids) == 0 or vecs.shape[1] != queries.shape[1]:
            return [(np.zeros(0, np.int64), np.zeros(0)) for _ in queries]
        ok = np.ones(len(ids), bool) if video_id is None else video == video_id
        keys = (video[ok] << 32) | shot[ok]
        sims = queries @ vecs[ok].T
        order = np.argsort(keys, kind="stable")
        keys_sorted = keys[order]
        uniq, start = np.unique(keys_sorted, return_index=True)
        for row in sims:
            out.append((uniq, np.maximum.reduceat(row[order], start) if len(uniq) else np.zeros(0)))
        return out
