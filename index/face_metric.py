"""A face metric learned per video, without labels (after Cinbis, Verbeek, Schmid, ICCV 2011,
"Unsupervised metric learning for face identification in TV video").

The video labels its own pairs:
  - must-link: faces of one track are one person;
  - cannot-link: two faces in one frame are two people (and, as cast clustering assumes, two
    tracks of one shot).

The metric is linear and closed-form, so it costs milliseconds and can be refitted each time a shot
closes: the face vectors are centred on the video's mean face (what every face of this video shares:
its compression, light and colour), then whitened by the within-track scatter (what varies while
the person stays the same: pose, expression, blur), shrunk towards the identity with the
Ledoit-Wolf rule (no tuning: the shrinkage is estimated from the data), so directions seen to vary
inside tracks count less (within-class covariance normalisation, tracks standing in for the
classes). `method="lda"` also weighs each whitened direction by how much cannot-link pairs differ
along it (between-person scatter over within-person scatter, as in LDA / KISSME).

    data = video_pairs(catalogue, video_id, "dlib-resnet")        # faces by track, pairs
    metric = fit(data.faces, data.cannot)                          # VideoMetric
    y = metric.apply(x)                                            # (n, d') L2-normalised
    metric.to_bytes() / VideoMetric.from_bytes(b)
    fit_video(catalogue, video_id, feature)  # fit and store in `face_metrics`; load(...) reads it
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np

METHODS = ("wccn", "lda")

SCHEMA = """
CREATE TABLE IF NOT EXISTS face_metrics (
    video_id INTEGER NOT NULL, feature TEXT NOT NULL, method TEXT, n_tracks INTEGER, n_faces INTEGER,
    n_cannot INTEGER, shots INTEGER, fitted_at REAL, data BLOB NOT NULL, PRIMARY KEY (video_id, feature));
"""


@dataclass
class VideoMetric:
    """x -> normalise((x - mean) @ proj). proj is dim x dim' (dim' <= dim)."""
    mean: np.ndarray
    proj: np.ndarray
    method: str = "wccn"
    n_tracks: int = 0
    n_faces: int = 0
    n_cannot: int = 0

    @property
    def dim(self) -> int:
        return int(self.proj.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Vectors (n, d) or (d,) → projected, L2-normalised float32 (cosine / dot product ready)."""
        x = np.asarray(x, np.float64)
        y = (x - self.mean) @ self.proj
        n = np.linalg.norm(y, axis=-1, keepdims=True)
        return (y / np.maximum(n, 1e-12)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean.astype(np.float64), proj=self.proj.astype(np.float64),
                 info=np.array([self.n_tracks, self.n_faces, self.n_cannot], np.int64), method=np.array(self.method))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "VideoMetric":
        z = np.load(io.BytesIO(data), allow_pickle=False)
        info = z["info"]
        return cls(z["mean"], z["proj"], str(z["method"]), int(info[0]), int(info[1]), int(info[2]))

    @classmethod
    def identity(cls, dim: int) -> "VideoMetric":
        """No learning: apply() only L2-normalises."""
        return cls(np.zeros(dim), np.eye(dim), "identity")


# --- the pairs ----------------------------------------------------------------------------------

@dataclass
class VideoPairs:
    """One video's tracked faces and the pairs they give."""
    track_ids: list[int] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)             # shot of each track
    faces: list[np.ndarray] = field(default_factory=list)      # (n_i, dim) face vectors of each track
    face_ids: list[list[int]] = field(default_factory=list)    # face ids of each track
    frame_ids: list[list[int]] = field(default_factory=list)   # frame of each of those faces
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start_s, end_s) of each track
    cannot: list[tuple[int, int]] = field(default_factory=list)     # track index pairs: two people

    def must_link_faces(self) -> list[tuple[int, int]]:
        """Face id pairs that are one person: two faces of one track."""
        return [(a, b) for ids in self.face_ids for i, a in enumerate(ids) for b in ids[i + 1:]]

    def cannot_link_faces(self) -> list[tuple[int, int]]:
        """Face id pairs that are two people: two faces of one frame."""
        by_frame: dict[int, list[int]] = {}
        for ids, frames in zip(self.face_ids, self.frame_ids):
            for f, fr in zip(ids, frames):
                by_frame.setdefault(fr, []).append(f)
        return [(a, b) for fs in by_frame.values() for i, a in enumerate(fs) for b in fs[i + 1:]]

    def together(self) -> list[tuple[int, int]]:
        """Track index pairs on screen at the same time: a face of each in one frame, or two tracks
        of one shot whose times overlap. Surely two people (two tracks of one shot that follow each
        other in time may be one person whose track broke)."""
        out = []
        frames = [set(f) for f in self.frame_ids]
        for i in range(len(self.track_ids)):
            for j in range(i + 1, len(self.track_ids)):
                if frames[i] & frames[j] or (self.shots[i] == self.shots[j] and self.spans[i][0] <= self.spans[j][1]
                                             and self.spans[j][0] <= self.spans[i][1]):
                    out.append((i, j))
        return out


def cannot_link_tracks(shots: list[int], frame_ids: list[list[int]]) -> list[tuple[int, int]]:
    """Track index pairs that are two people: a face of each in one frame, or two tracks of one shot."""
    frames = [set(f) for f in frame_ids]
    return [(i, j) for i in range(len(shots)) for j in range(i + 1, len(shots))
            if shots[i] == shots[j] or frames[i] & frames[j]]


def video_pairs(catalogue, video_id: int, feature: str, usable_only: bool = True) -> VideoPairs:
    """The tracks of a video (those with a vector when usable_only: the ones cast clustering uses),
    their face vectors, and the cannot-link pairs between them."""
    c = catalogue.conn
    rows = c.execute(
        "SELECT t.id AS track, t.shot_idx, t.start_s, t.end_s, tf.face_id, fc.frame_id, v.vec FROM tracks t"
        " JOIN track_faces tf ON tf.track_id=t.id JOIN faces fc ON fc.id=tf.face_id"
        " JOIN vectors v ON v.face_id=tf.face_id AND v.feature=?"
        " WHERE t.video_id=? AND t.feature=?" + (" AND t.vec IS NOT NULL" if usable_only else "") +
        " ORDER BY t.id, fc.frame_id", (feature, video_id, feature)).fetchall()
    out = VideoPairs()
    vecs: list[list[np.ndarray]] = []
    for r in rows:
        if not out.track_ids or out.track_ids[-1] != r["track"]:
            out.track_ids.append(r["track"])
            out.shots.append(r["shot_idx"])
            out.spans.append((r["start_s"], r["end_s"]))
            out.face_ids.append([])
            out.frame_ids.append([])
            vecs.append([])
        out.face_ids[-1].append(r["face_id"])
        out.frame_ids[-1].append(r["frame_id"])
        vecs[-1].append(np.frombuffer(r["vec"], np.float32))
    out.faces = [np.stack(v) for v in vecs]
    out.cannot = cannot_link_tracks(out.shots, out.frame_ids)
    return out


# --- fitting ------------------------------------------------------------------------------------

def _shrunk_second_moment(diffs: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk E[d d^T] of difference vectors (zero-mean by construction): the sample
    second moment pulled towards mu*I by the amount that minimises the expected error (Ledoit &
    Wolf 2004; the same estimate as sklearn.covariance.ledoit_wolf(assume_centered=True), without
    importing scikit-learn on the ingest path)."""
    x = np.asarray(diffs, np.float64)
    n, p = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / p
    delta = ((s - mu * np.eye(p)) ** 2).sum() / p
    x2 = x * x
    beta = min(((x2.T @ x2) / n - s * s).sum() / (p * n), delta)
    shrink = 0.0 if delta == 0 else beta / delta
    return (1.0 - shrink) * s + shrink * mu * np.eye(p)


def _cannot_diffs(faces: list[np.ndarray], cannot, per_pair: int, rng) -> np.ndarray | None:
    out = []
    for a, b in cannot:
        A, B = faces[a], faces[b]
        ia, ib = rng.integers(0, len(A), per_pair), rng.integers(0, len(B), per_pair)
        out.append((A[ia] - B[ib]) / np.sqrt(2.0))
    return np.concatenate(out) if out else None


def fit(face_vectors_by_track: list[np.ndarray], cannot_link_pairs=(), method: str = "wccn",
        per_pair: int = 32, seed: int = 0) -> VideoMetric:
    """Learn the video's metric. face_vectors_by_track: one (n_i, dim) array per track (its faces:
    must-link); cannot_link_pairs: track index pairs that are two people (used by method "lda",
    and counted). Tracks with one face add nothing to the within-track scatter. Too little data
    (fewer than 2 faces in tracks of two or more) gives the identity (plain L2 normalisation)."""
    # 128 x 128 matrices: one BLAS thread. Several threads on a busy machine (an ingest running beside)
    # made a fit take 0.5-1 s instead of 2-40 ms.
    with _one_blas_thread():
        return _fit(face_vectors_by_track, cannot_link_pairs, method, per_pair, seed)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1, user_api="blas")
    except Exception:  # not installed: as it is
        from contextlib import nullcontext
        return nullcontext()


def _fit(face_vectors_by_track, cannot_link_pairs, method, per_pair, seed) -> VideoMetric:
    if method not in METHODS:
        raise ValueError(f"unknown face metric '{method}' (known: {', '.join(METHODS)})")
    all_tracks = [np.asarray(f, np.float64).reshape(len(f), -1) for f in face_vectors_by_track]
    tracks = [t for t in all_tracks if len(t)]
    cannot = [(a, b) for a, b in cannot_link_pairs if len(all_tracks[a]) and len(all_tracks[b])]
    if not tracks:
        raise ValueError("no face vectors to fit a metric on")
    dim = tracks[0].shape[1]
    n_faces = sum(len(t) for t in tracks)
    within = [t - t.mean(0) for t in tracks if len(t) > 1]
    if sum(len(w) for w in within) < 2:
        m = VideoMetric.identity(dim)
        m.n_tracks, m.n_faces, m.n_cannot = len(tracks), n_faces, len(cannot)
        return m
    mean = np.concatenate(tracks).mean(0)
    sw = _shrunk_second_moment(np.concatenate(within))
    w, v = np.linalg.eigh(sw)
    white = v / np.sqrt(np.maximum(w, 1e-12 * w.max()))[None, :]
    proj = white
    if method == "lda":
        diffs = _cannot_diffs(all_tracks, cannot, per_pair, np.random.default_rng(seed))
        if diffs is not None and len(diffs) > 1:
            # whitened, the within-track scatter is ~I; the cannot-link scatter's eigenvalues say how
            # much more two people differ than one person varies along each direction (KISSME:
            # M = Sw^-1 - Sb^-1, directions where people differ less than a face varies get 0)
            lam, u = np.linalg.eigh(_shrunk_second_moment(diffs @ white))
            weight = np.sqrt(np.maximum(1.0 - 1.0 / np.maximum(lam, 1e-12), 0.0))
            if weight.max() > 0:
                proj = (white @ u) * weight[None, :]
    return VideoMetric(mean, proj, method, len(tracks), n_faces, len(cannot))


# --- stored per video ---------------------------------------------------------------------------

def ensure_schema(catalogue) -> None:
    catalogue.conn.executescript(SCHEMA)


def fit_video(catalogue, video_id: int, feature: str, method: str = "wccn", save: bool = True) -> VideoMetric | None:
    """Fit the metric of a video from its tracks as they are now (call again as shots close) and
    store it (face_metrics, keyed by video and feature). None when the video has no tracked faces."""
    data = video_pairs(catalogue, video_id, feature)
    if not data.faces:
        return None
    metric = fit(data.faces, data.cannot, method)
    if save:
        ensure_schema(catalogue)
        catalogue.conn.execute(
            "INSERT OR REPLACE INTO face_metrics (video_id, feature, method, n_tracks, n_faces, n_cannot, shots,"
            " fitted_at, data) VALUES (?,?,?,?,?,?,?,?,?)",
            (video_id, feature, metric.method, metric.n_tracks, metric.n_faces, metric.n_cannot,
             len(set(data.shots)), time.time(), metric.to_bytes()))
    return metric


def _have_table(catalogue) -> bool:
    return catalogue.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='face_metrics'").fetchone() is not None


def load(catalogue, video_id: int, feature: str) -> VideoMetric | None:
    """The stored metric of a video (None when none was fitted). Reads only: fine on a read-only index."""
    if not _have_table(catalogue):
        return None
    row = catalogue.conn.execute("SELECT data FROM face_metrics WHERE video_id=? AND feature=?",
                                 (video_id, feature)).fetchone()
    return VideoMetric.from_bytes(row[0]) if row else None


def forget(catalogue, video_id: int) -> None:
    """Drop a video's metric (its tracks changed: an ingest resumes, or the video is removed)."""
    if _have_table(catalogue):
        catalogue.conn.execute("DELETE FROM face_metrics WHERE video_id=?", (video_id,))
