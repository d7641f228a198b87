"""SQLite catalogue of videos, shots, frames, faces and vectors (WAL: readers never block the writer).

It is the source of truth: every vector is stored here too, so a FAISS file can always be
rebuilt. Ingest commits one batch at a time, so a killed ingest loses at most one batch."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from castfinder.core.errors import CastfinderError, IndexBusyError, IndexDamagedError, IndexUnwritableError
from castfinder.stream.face_context import from_blob as context_from_blob
from castfinder.stream.face_context import to_blob as context_blob

# ids never come back after a delete (AUTOINCREMENT): FAISS ids, the vector map and thumbnail
# caches all key on them
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, fingerprint TEXT NOT NULL, name TEXT,
    status TEXT NOT NULL, is_live INTEGER NOT NULL, duration_s REAL, fps REAL, width INTEGER, height INTEGER,
    indexed_until_s REAL DEFAULT 0, frames_decoded INTEGER DEFAULT 0, frames_sampled INTEGER DEFAULT 0,
    frames_dropped INTEGER DEFAULT 0, damaged_packets INTEGER DEFAULT 0, damaged_spans TEXT DEFAULT '[]',
    error TEXT, config TEXT, created_at REAL, updated_at REAL);
CREATE INDEX IF NOT EXISTS videos_fp ON videos(fingerprint);
CREATE TABLE IF NOT EXISTS shots (
    video_id INTEGER NOT NULL, idx INTEGER NOT NULL, start_frame INTEGER, end_frame INTEGER,
    start_s REAL, end_s REAL, closed INTEGER DEFAULT 0, PRIMARY KEY (video_id, idx));
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT, video_id INTEGER NOT NULL, shot_idx INTEGER NOT NULL,
    frame_idx INTEGER NOT NULL, time_s REAL NOT NULL, n_faces INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS frames_shot ON frames(video_id, shot_idx);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT, frame_id INTEGER NOT NULL, x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    prob REAL, landmarks TEXT, sharpness REAL, context BLOB);
CREATE INDEX IF NOT EXISTS faces_frame ON faces(frame_id);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, feature TEXT NOT NULL, video_id INTEGER NOT NULL, frame_id INTEGER NOT NULL,
    face_id INTEGER, vec BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS vectors_feature ON vectors(feature, id);
CREATE INDEX IF NOT EXISTS vectors_video ON vectors(video_id);
"""


def storage_error(exc: sqlite3.Error, path: Path) -> CastfinderError:
    """What an SQLite error on the catalogue means to the user, as one line."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in low or "busy" in low:
            return IndexBusyError(f"{path}: the catalogue is locked by another process ({text}); try again")
        if "readonly" in low or "read-only" in low or "unable to open" in low or "permission" in low:
            return IndexUnwritableError(f"{path.parent}: cannot write the index folder ({text}); check its permissions "
                                        f"and free space, or use another --index")
        if "disk i/o" in low or "full" in low:
            return IndexUnwritableError(f"{path}: cannot write the catalogue ({text}); check the disk and free space")
    return IndexDamagedError(f"index damaged: {path}: {text} (the catalogue cannot be rebuilt: restore the index "
                             f"folder from a backup, or move it away and ingest the videos again)")


def _check_length(path: Path) -> None:
    """A truncated database reads fine until a query reaches a missing page: compare the file with
    the size its header gives, so a cut-off catalogue is caught on open, before anything is written.
    Only with no write-ahead log pending: a writer's checkpoint rewrites the header before the
    pages after it, and a reader must not take that moment for damage."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return
    try:
        with open(path, "rb") as f:
            head = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return  # empty (a new index) or not SQLite at all: SQLite itself says which
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    # the page count is trusted only when written by a version that kept it (same change counter)
    if pages and head[24:28] == head[92:96] and size < pages * page:
        raise sqlite3.DatabaseError(f"truncated: {size} bytes of {pages * page}")


class Catalogue:
    def __init__(self, path: Path, writable: bool = True):
        """writable=False: a reader, which still reads a folder it cannot write (a read-only mount)."""
        self.path = Path(path)
        self._local = threading.local()
        self._uri: str | None = None  # set when the folder is read-only: the database is opened read-only
        try:
            if not writable and self.path.exists() and self.path.stat().st_size == 0:
                raise sqlite3.DatabaseError("file is empty (0 bytes)")
            _check_length(self.path)
            try:
                self.conn.executescript(SCHEMA)
                self._migrate()
            except sqlite3.OperationalError as exc:
                if writable or not isinstance(storage_error(exc, self.path), IndexUnwritableError):
                    raise
                self._open_read_only()
            self.conn.execute("SELECT COUNT(*) FROM videos").fetchone()
        except sqlite3.Error as exc:
            self.close()
            raise storage_error(exc, self.path) from None

    def _open_read_only(self) -> None:
        """A reader in a folder it cannot write: SQLite cannot make its -shm file there. With no
        pending write-ahead log the file alone is the database, and nothing can change it."""
        self.close()
        wal = Path(f"{self.path}-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        self._uri = f"file:{quote(str(self.path.resolve()))}?mode=ro" + ("" if pending else "&immutable=1")

    def _migrate(self) -> None:
        """Columns added after an index was first made."""
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(faces)")}
        if "sharpness" not in cols:
            self.conn.execute("ALTER TABLE faces ADD COLUMN sharpness REAL")
        if "context" not in cols:  # faces indexed before it have none: search skips them
            self.conn.execute("ALTER TABLE faces ADD COLUMN context BLOB")

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._uri is not None:
                conn = sqlite3.connect(self._uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
            else:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- videos -------------------------------------------------------------------------------
    def find_video(self, fingerprint: str):
        return self.conn.execute("SELECT * FROM videos WHERE fingerprint=? ORDER BY id DESC LIMIT 1",
                                 (fingerprint,)).fetchone()

    def create_video(self, source: str, fingerprint: str, name: str, info, config: dict,
                     video_id: int | None = None) -> int:
        """video_id: the id to use (a sharded index's job numbers the videos of all its shards)."""
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO videos (id, source, fingerprint, name, status, is_live, duration_s, fps, width, height,"
            " config, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (video_id, source, fingerprint, name, "ingesting", int(info.is_live), info.duration_s, info.fps,
             info.width, info.height, json.dumps(config), now, now))
        return int(cur.lastrowid)

    def update_video(self, video_id: int, **fields) -> None:
        if "damaged_spans" in fields:
            fields["damaged_spans"] = json.dumps(fields["damaged_spans"])
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in fields)
        self.conn.execute(f"UPDATE videos SET {cols} WHERE id=?", (*fields.values(), video_id))

    def video(self, video_id: int):
        return self.conn.execute("SELECT * FROM videos WHERE id=?", (video_id,)).fetchone()

    def videos(self) -> list:
        return self.conn.execute("SELECT * FROM videos ORDER BY id").fetchall()

    def shots(self, video_id: int) -> list:
        return self.conn.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM frames f WHERE f.video_id=s.video_id AND f.shot_idx=s.idx) AS n_frames,"
            " (SELECT COALESCE(SUM(n_faces),0) FROM frames f WHERE f.video_id=s.video_id AND f.shot_idx=s.idx) AS n_faces"
            " FROM shots s WHERE video_id=? ORDER BY idx", (video_id,)).fetchall()

    def counts(self, video_id: int) -> dict:
        c = self.conn
        return {
            "shots": c.execute("SELECT COUNT(*) FROM shots WHERE video_id=? AND closed=1", (video_id,)).fetchone()[0],
            "vectors": c.execute("SELECT COUNT(*) FROM vectors WHERE video_id=?", (video_id,)).fetchone()[0],
        } | dict(zip(("frames", "faces"), c.execute(  # n_faces, not a join over faces: 4x faster on 200k faces
            "SELECT COUNT(*), COALESCE(SUM(n_faces), 0) FROM frames WHERE video_id=?", (video_id,)).fetchone()))

    # --- ingest writes ------------------------------------------------------------------------
    def open_shot(self, video_id: int, idx: int, start_frame: int, start_s: float) -> None:
        self.conn.execute("INSERT OR REPLACE INTO shots (video_id, idx, start_frame, end_frame, start_s, end_s, closed)"
                          " VALUES (?,?,?,?,?,?,0)", (video_id, idx, start_frame, start_frame + 1, start_s, start_s))

    def close_shot(self, video_id: int, shot) -> None:
        self.conn.execute("INSERT OR REPLACE INTO shots (video_id, idx, start_frame, end_frame, start_s, end_s, closed)"
                          " VALUES (?,?,?,?,?,?,1)", (video_id, shot.index, shot.start_frame, shot.end_frame,
                                                      shot.start_s, shot.end_s))

    def add_frames(self, video_id: int, records: list) -> list[tuple[str, int, np.ndarray]]:
        """Insert frames, their faces and vectors in one transaction.
        records: (shot_idx, frame_idx, time_s, faces, {feature: frame_vector}, {feature: face_vectors}).
        Returns (feature, vector_id, vector) for the FAISS indexes."""
        out = []
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for shot_idx, frame_idx, time_s, faces, frame_vecs, face_vecs in records:
                frame_id = c.execute("INSERT INTO frames (video_id, shot_idx, frame_idx, time_s, n_faces) VALUES (?,?,?,?,?)",
                                     (video_id, shot_idx, frame_idx, time_s, len(faces))).lastrowid
                # the open shot grows as frames arrive, so mid-ingest searches can name its span
                c.execute("UPDATE shots SET end_s=MAX(end_s, ?), end_frame=MAX(end_frame, ?) WHERE video_id=? AND idx=? AND closed=0",
                          (time_s, frame_idx + 1, video_id, shot_idx))
                face_ids = []
                for face in faces:
                    face_ids.append(c.execute(
                        "INSERT INTO faces (frame_id, x1, y1, x2, y2, prob, landmarks, sharpness, context)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        (frame_id, *map(float, face.box), face.prob, json.dumps(np.round(face.landmarks, 1).tolist()),
                         face.sharpness, context_blob(face.context))).lastrowid)
                for feature, vec in frame_vecs.items():
                    vid = c.execute("INSERT INTO vectors (feature, video_id, frame_id, face_id, vec) VALUES (?,?,?,NULL,?)",
                                    (feature, video_id, frame_id, vec.astype(np.float32).tobytes())).lastrowid
                    out.append((feature, vid, vec))
                for feature, vecs in face_vecs.items():
                    for face_id, vec in zip(face_ids, vecs):
                        vid = c.execute("INSERT INTO vectors (feature, video_id, frame_id, face_id, vec) VALUES (?,?,?,?,?)",
                                        (feature, video_id, frame_id, face_id, vec.astype(np.float32).tobytes())).lastrowid
                        out.append((feature, vid, vec))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return out

    def delete_from_shot(self, video_id: int, shot_idx: int) -> list[int]:
        """Remove shot `shot_idx` and everything after it (an ingest resumes there). Returns the
        vector ids removed, for the FAISS indexes."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            frame_ids = [r[0] for r in c.execute("SELECT id FROM frames WHERE video_id=? AND shot_idx>=?", (video_id, shot_idx))]
            vec_ids = []
            for i in range(0, len(frame_ids), 500):
                chunk = frame_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                vec_ids += [r[0] for r in c.execute(f"SELECT id FROM vectors WHERE frame_id IN ({marks})", chunk)]
                c.execute(f"DELETE FROM vectors WHERE frame_id IN ({marks})", chunk)
                c.execute(f"DELETE FROM faces WHERE frame_id IN ({marks})", chunk)
            c.execute("DELETE FROM frames WHERE video_id=? AND shot_idx>=?", (video_id, shot_idx))
            c.execute("DELETE FROM shots WHERE video_id=? AND idx>=?", (video_id, shot_idx))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        from .cast import forget_shots
        forget_shots(self, video_id, shot_idx)
        return vec_ids

    def delete_video(self, video_id: int) -> list[int]:
        ids = self.delete_from_shot(video_id, 0)
        self.conn.execute("DELETE FROM videos WHERE id=?", (video_id,))
        return ids

    # --- reads for search and reconciliation --------------------------------------------------
    def vectors_after(self, feature: str, after_id: int, batch: int = 4096):
        """Yield (ids, vectors) of a feature with id > after_id, in id order."""
        last = after_id
        while True:
            rows = self.conn.execute("SELECT id, vec FROM vectors WHERE feature=? AND id>? ORDER BY id LIMIT ?",
                                     (feature, last, batch)).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], np.int64)
            vecs = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
            yield ids, vecs
            last = int(ids[-1])

    def shot_frame_vectors(self, feature: str, video_id: int, shot: int) -> np.ndarray | None:
        """The frame vectors (not face vectors) of one shot, or None when it has none."""
        rows = self.conn.execute(
            "SELECT v.vec FROM vectors v JOIN frames f ON f.id=v.frame_id WHERE v.feature=? AND v.face_id IS NULL"
            " AND f.video_id=? AND f.shot_idx=?", (feature, video_id, shot)).fetchall()
        return np.stack([np.frombuffer(r[0], np.float32) for r in rows]) if rows else None

    def feature_count(self, feature: str, upto: int) -> int:
        """Vectors of a feature with id <= upto (what a FAISS checkpoint holding ids up to `upto` must hold)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM vectors WHERE feature=? AND id<=?", (feature, upto)).fetchone()[0])

    def feature_stats(self, feature: str) -> tuple[int, int]:
        row = self.conn.execute("SELECT COUNT(*), COALESCE(MAX(id), -1) FROM vectors WHERE feature=?", (feature,)).fetchone()
        return int(row[0]), int(row[1])

    def _rows_for_ids(self, sql: str, ids):
        """Rows of `sql` (one `{marks}` for an IN list) for the non-negative ids, asked 500 at a time
        (SQLite caps the parameters of one statement)."""
        ids = [int(i) for i in ids if i >= 0]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            yield from self.conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)

    def vector_rows(self, ids) -> dict[int, sqlite3.Row]:
        return {r["id"]: r for r in self._rows_for_ids(
            "SELECT v.id, v.video_id, v.frame_id, v.face_id, f.shot_idx, f.time_s, f.frame_idx"
            " FROM vectors v JOIN frames f ON f.id=v.frame_id WHERE v.id IN ({marks})", ids)}

    def face_contexts(self, vector_ids) -> dict[int, np.ndarray]:
        """Face vector id -> the context descriptor of its face (stream/face_context.py), for the ids
        whose face has one."""
        out = {}
        for vid, blob in self._rows_for_ids("SELECT v.id, fc.context FROM vectors v JOIN faces fc ON fc.id=v.face_id"
                                            " WHERE v.id IN ({marks}) AND fc.context IS NOT NULL", vector_ids):
            vec = context_from_blob(blob)
            if vec is not None:
                out[vid] = vec
        return out

    def shot_spans(self, keys) -> dict[tuple[int, int], tuple[float, float]]:
        """(video, shot) → (start_s, end_s) for the given shots only."""
        out = {}
        by_video: dict[int, list[int]] = {}
        for v, s in keys:
            by_video.setdefault(v, []).append(s)
        for v, shots in by_video.items():
            for i in range(0, len(shots), 500):
                chunk = shots[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for r in self.conn.execute(f"SELECT idx, start_s, end_s FROM shots WHERE video_id=? AND idx IN ({marks})",
                                           (v, *chunk)):
                    out[(v, r[0])] = (r[1], r[2])
        return out

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        try:
            return json.loads(row[0]) if row else default
        except (TypeError, ValueError):
            raise storage_error(sqlite3.DatabaseError(f"setting '{key}' is not JSON ({str(row[0])[:40]!r})"),
                                self.path) from None

    def set_meta(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?,?)", (key, json.dumps(value)))
