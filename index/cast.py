"""Cast discovery: face tracks per shot → one cluster per character, kept in the catalogue.

During ingest each closed shot's tracks join the existing clusters (incremental rule); `build`
re-clusters a whole video with the batch algorithm. Names given to clusters survive re-clustering
(carried to the new cluster holding most of the named one's tracks)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from castfinder.core.errors import InputError, NameTakenError, NotFoundError

from . import face_metric
from .cast_clustering import cluster, join, merged_threshold, distances
from .finch import finch
from .tracks import TrackParams, link, shot_detections

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, video_id INTEGER NOT NULL, shot_idx INTEGER NOT NULL, feature TEXT,
    n_faces INTEGER, start_s REAL, end_s REAL, best_face_id INTEGER, best_frame_id INTEGER, quality REAL,
    vec BLOB, cluster_id INTEGER);
CREATE INDEX IF NOT EXISTS tracks_video ON tracks(video_id, shot_idx);
CREATE INDEX IF NOT EXISTS tracks_cluster ON tracks(cluster_id);
CREATE TABLE IF NOT EXISTS track_faces (track_id INTEGER NOT NULL, face_id INTEGER NOT NULL, quality REAL);
CREATE INDEX IF NOT EXISTS track_faces_track ON track_faces(track_id);
CREATE TABLE IF NOT EXISTS cast_shots (video_id INTEGER NOT NULL, shot_idx INTEGER NOT NULL, PRIMARY KEY (video_id, shot_idx));
CREATE TABLE IF NOT EXISTS clusters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, video_id INTEGER NOT NULL, name TEXT, threshold REAL, mean BLOB,
    n_tracks INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS clusters_name ON clusters(name) WHERE name IS NOT NULL;
"""


@dataclass
class CastParams:
    feature: str = "dlib-resnet"     # face vectors the tracks use
    metric: str = "l2"               # cosine | l2 | l1
    threshold: float = 0.45          # initial T of every track (l2 between unit vectors: 0.45 ~ cosine 0.90)
    best_q: int = 1                  # track vector: best face (1, the paper) or mean of the best q
    min_quality: float = 0.15        # tracks whose best face is worse are treated as faceless
    method: str = "finch"            # batch clustering: finch (no parameter) | ducros (per-cluster thresholds)
    coherence: float = 0.8           # finch: the bound on a cluster's spread (index/finch.py; 0: none)
    face_metric: str = "wccn"        # wccn | lda | none: the video's own face metric (index/face_metric.py),
                                     # refitted and stored as shots close (for search), none = not fitted
    cluster_in_metric: bool = False  # batch clustering in that metric rather than on the raw vectors
    track: TrackParams = field(default_factory=TrackParams)


METHODS = ("ducros", "finch")
METRIC_REFIT_GROWTH = 1.1            # during ingest the metric is refitted once the tracked faces grew by 10%


def params_from_config(cfg, feature: str) -> CastParams:
    """The cast settings of a preset (castfinder.core.config.CastConfig) for one face feature."""
    from .tracks import TrackParams
    return CastParams(feature=feature, metric=cfg.metric, threshold=cfg.threshold, best_q=cfg.best_q,
                      min_quality=cfg.min_quality, method=cfg.method, coherence=cfg.coherence,
                      face_metric=cfg.face_metric,
                      cluster_in_metric=cfg.cluster_in_metric, track=TrackParams(f_min=cfg.f_min))


def ensure_schema(catalogue) -> None:
    catalogue.conn.executescript(SCHEMA)


class Cast:
    def __init__(self, store, params: CastParams | None = None):
        self.store, self.cat = store, store.catalogue
        self.p = params or CastParams()
        ensure_schema(self.cat)

    # --- tracks ---------------------------------------------------------------------------------
    def track_shot(self, video_id: int, shot: int) -> list[int]:
        """Build and store the tracks of one shot (idempotent). Returns the new usable track ids."""
        c = self.cat.conn
        if c.execute("SELECT 1 FROM cast_shots WHERE video_id=? AND shot_idx=?", (video_id, shot)).fetchone():
            return []
        frames = shot_detections(self.cat, video_id, shot, self.p.feature)
        tracks = link(shot, frames, self.p.track)
        ids = []
        c.execute("BEGIN IMMEDIATE")
        try:
            for t in tracks:
                best = t.best(1)[0]
                usable = t.quality >= self.p.min_quality
                tid = c.execute(
                    "INSERT INTO tracks (video_id, shot_idx, feature, n_faces, start_s, end_s, best_face_id, best_frame_id,"
                    " quality, vec, cluster_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (video_id, shot, self.p.feature, len(t.detections), t.detections[0].time_s, t.last.time_s,
                     best.face_id, best.frame_id, t.quality, t.vector(self.p.best_q).tobytes() if usable else None,
                     None)).lastrowid
                c.executemany("INSERT INTO track_faces (track_id, face_id, quality) VALUES (?,?,?)",
                              [(tid, d.face_id, d.quality) for d in t.detections])
                if usable:
                    ids.append(tid)
            c.execute("INSERT INTO cast_shots (video_id, shot_idx) VALUES (?,?)", (video_id, shot))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return ids

    def track_video(self, video_id: int) -> int:
        """Track every closed shot not tracked yet. Returns how many shots were processed."""
        shots = [r[0] for r in self.cat.conn.execute(
            "SELECT idx FROM shots s WHERE video_id=? AND closed=1 AND NOT EXISTS"
            " (SELECT 1 FROM cast_shots c WHERE c.video_id=s.video_id AND c.shot_idx=s.idx) ORDER BY idx", (video_id,))]
        for s in shots:
            self.track_shot(video_id, s)
        return len(shots)

    def tracks(self, video_id: int):
        """The usable tracks of a video (rows: id, shot_idx, vec, cluster_id) and their vectors."""
        rows = self.cat.conn.execute("SELECT id, shot_idx, vec, cluster_id FROM tracks WHERE video_id=? AND vec IS NOT NULL"
                                     " ORDER BY id", (video_id,)).fetchall()
        vecs = np.stack([np.frombuffer(r["vec"], np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)
        return rows, vecs

    # --- incremental (during ingest) ------------------------------------------------------------
    def on_shot_closed(self, video_id: int, shot: int) -> None:
        new = self.track_shot(video_id, shot)
        if not new:
            return
        if self.p.face_metric != "none":
            self.refresh_metric(video_id)
        c = self.cat.conn
        clusters = c.execute("SELECT id, threshold, mean FROM clusters WHERE video_id=? ORDER BY id", (video_id,)).fetchall()
        ids = [r["id"] for r in clusters]
        means = [np.frombuffer(r["mean"], np.float64).copy() for r in clusters]
        thresholds = [r["threshold"] for r in clusters]
        sizes = {r["id"]: n for r, n in zip(clusters, [self._size(r["id"]) for r in clusters])}
        groups = [self._cluster_shots(i) for i in ids]
        for tid in new:
            row = c.execute("SELECT vec FROM tracks WHERE id=?", (tid,)).fetchone()
            v = np.frombuffer(row["vec"], np.float32).astype(np.float64)
            hit = join(v, shot, self.p.threshold, np.array(means) if means else np.zeros((0, len(v))),
                       np.array(thresholds), groups, self.p.metric)
            if hit is None:
                cid = c.execute("INSERT INTO clusters (video_id, threshold, mean, n_tracks) VALUES (?,?,?,1)",
                                (video_id, self.p.threshold, v.tobytes())).lastrowid
                ids.append(cid)
                means.append(v)
                thresholds.append(self.p.threshold)
                groups.append({shot})
                sizes[cid] = 1
            else:
                k, d = hit
                cid = ids[k]
                n = sizes[cid]
                means[k] = (means[k] * n + v) / (n + 1)
                thresholds[k] = merged_threshold(thresholds[k], self.p.threshold, d)
                groups[k].add(shot)
                sizes[cid] = n + 1
                c.execute("UPDATE clusters SET mean=?, threshold=?, n_tracks=? WHERE id=?",
                          (means[k].tobytes(), thresholds[k], n + 1, cid))
            c.execute("UPDATE tracks SET cluster_id=? WHERE id=?", (cid, tid))

    def _size(self, cluster_id: int) -> int:
        return self.cat.conn.execute("SELECT COUNT(*) FROM tracks WHERE cluster_id=?", (cluster_id,)).fetchone()[0]

    def _cluster_shots(self, cluster_id: int) -> set:
        return {r[0] for r in self.cat.conn.execute("SELECT DISTINCT shot_idx FROM tracks WHERE cluster_id=?", (cluster_id,))}

    # --- batch ----------------------------------------------------------------------------------
    def build(self, video_id: int, recluster: bool = True) -> int:
        """Track what is left, then cluster all tracks of the video. Returns the number of clusters."""
        if self.cat.video(video_id) is None:
            raise NotFoundError(f"no video with id {video_id}")
        self.track_video(video_id)
        c = self.cat.conn
        have = c.execute("SELECT COUNT(*) FROM clusters WHERE video_id=?", (video_id,)).fetchone()[0]
        unassigned = c.execute("SELECT COUNT(*) FROM tracks WHERE video_id=? AND vec IS NOT NULL AND cluster_id IS NULL",
                               (video_id,)).fetchone()[0]
        if have and not recluster and not unassigned:
            return have
        rows, vecs = self.tracks(video_id)
        old_names = {r[0]: r[1] for r in c.execute("SELECT id, name FROM clusters WHERE video_id=? AND name IS NOT NULL",
                                                   (video_id,))}
        old_of_track = {r["id"]: r["cluster_id"] for r in rows}
        result = self.cluster_tracks(video_id, rows, vecs)
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("UPDATE tracks SET cluster_id=NULL WHERE video_id=?", (video_id,))
            c.execute("DELETE FROM clusters WHERE video_id=?", (video_id,))
            new_ids = []
            for k in range(len(result.means)):
                new_ids.append(c.execute("INSERT INTO clusters (video_id, threshold, mean, n_tracks) VALUES (?,?,?,?)",
                                         (video_id, float(result.thresholds[k]), result.means[k].astype(np.float64).tobytes(),
                                          int(result.sizes[k]))).lastrowid)
            c.executemany("UPDATE tracks SET cluster_id=? WHERE id=?",
                          [(new_ids[int(lab)], r["id"]) for r, lab in zip(rows, result.labels)])
            # names follow their tracks: each old named cluster → the new cluster holding most of them
            for old, name in old_names.items():
                votes: dict[int, int] = {}
                for r, lab in zip(rows, result.labels):
                    if old_of_track[r["id"]] == old:
                        votes[new_ids[int(lab)]] = votes.get(new_ids[int(lab)], 0) + 1
                target = max(votes, key=votes.get) if votes else None
                if target is not None and c.execute("SELECT name FROM clusters WHERE id=?", (target,)).fetchone()[0] is None:
                    c.execute("UPDATE clusters SET name=? WHERE id=?", (name, target))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return len(new_ids)

    # --- the video's face metric and the batch methods -------------------------------------------
    def refresh_metric(self, video_id: int, force: bool = False) -> "face_metric.VideoMetric | None":
        """Refit and store the video's face metric when the tracked faces grew by a tenth since the
        last fit (cheap: a few ms; a long film refits O(log n) times), or when forced."""
        c = self.cat.conn
        face_metric.ensure_schema(self.cat)
        row = c.execute("SELECT n_faces FROM face_metrics WHERE video_id=? AND feature=?",
                        (video_id, self.p.feature)).fetchone()
        if row is not None and not force:
            now = c.execute("SELECT COUNT(*) FROM track_faces tf JOIN tracks t ON t.id=tf.track_id"
                            " WHERE t.video_id=? AND t.vec IS NOT NULL", (video_id,)).fetchone()[0]
            if now < row[0] * METRIC_REFIT_GROWTH:
                return face_metric.load(self.cat, video_id, self.p.feature)
        return face_metric.fit_video(self.cat, video_id, self.p.feature, self.p.face_metric)

    def cluster_tracks(self, video_id: int, rows, vecs: np.ndarray, metric="fit"):
        """Batch clustering of a video's usable tracks (rows and vectors as `tracks` gives them) with
        the configured method, in the video's face metric when cluster_in_metric is set (metric="fit":
        refit and store it then; or pass a VideoMetric, or None for none). Cluster means and thresholds
        come back in the original space (photos and new tracks are compared there)."""
        from .cast_clustering import Clustering
        if self.p.method not in METHODS:
            raise InputError(f"unknown cast method '{self.p.method}' (known: {', '.join(METHODS)})")
        shots = [r["shot_idx"] for r in rows]
        if len(rows) == 0:
            return cluster(vecs, shots, self.p.threshold, self.p.metric)
        space = vecs
        if isinstance(metric, str):
            use = self.p.cluster_in_metric and self.p.face_metric != "none"
            metric = self.refresh_metric(video_id, force=True) if use else None
        if metric is not None:
            space = metric.apply(vecs)
        if self.p.method == "ducros":
            t = self.p.threshold if space is vecs else matched_threshold(vecs, space, self.p.threshold, self.p.metric)
            result = cluster(space, shots, t, self.p.metric)
            if space is vecs:
                return result
            labels = result.labels
        else:
            labels = finch(space, shots, coherence=self.p.coherence).labels
        k = int(labels.max()) + 1 if len(labels) else 0
        x = np.asarray(vecs, np.float64)
        means = np.stack([x[labels == i].mean(0) for i in range(k)])
        sizes = np.bincount(labels, minlength=k)
        return Clustering(labels, means, np.full(k, self.p.threshold), sizes, len(labels) - k)

    def current(self, video_id: int, recluster: bool = False) -> list[dict]:
        """The cast to show: a video still ingesting shows its incremental clusters; a finished one
        gets the batch algorithm once (again when new tracks appeared, or when asked)."""
        video = self.cat.video(video_id)
        if video is None:
            raise NotFoundError(f"no video with id {video_id}")
        if video["status"] != "ingesting":
            tracked = self.cat.conn.execute("SELECT COUNT(*) FROM tracks WHERE video_id=?", (video_id,)).fetchone()[0]
            stamp = self.cat.get_meta(f"cast_batch_{video_id}")
            if recluster or stamp != self._batch_stamp(tracked) or self.track_video(video_id):
                self.build(video_id, recluster=True)
                n = self.cat.conn.execute("SELECT COUNT(*) FROM tracks WHERE video_id=?", (video_id,)).fetchone()[0]
                self.cat.set_meta(f"cast_batch_{video_id}", self._batch_stamp(n))
        return self.clusters(video_id)

    def _batch_stamp(self, tracks: int) -> str:
        """What the stored batch clusters were built from: the tracks, and the settings that shape the
        clusters. Either changing (a new shot, another method) clusters the video again."""
        p = self.p
        return f"{tracks}:{p.method}:{p.metric}:{p.threshold}:{p.face_metric}:{p.cluster_in_metric}:{p.coherence}"

    # --- reading and naming ---------------------------------------------------------------------
    def clusters(self, video_id: int, faces_per_cluster: int = 12) -> list[dict]:
        """Characters, most screen time first: shots, screen time, first appearance, best faces."""
        c = self.cat.conn
        groups = []
        for cl in c.execute("SELECT id, name, threshold FROM clusters WHERE video_id=?", (video_id,)).fetchall():
            tracks = [r[0] for r in c.execute("SELECT id FROM tracks WHERE cluster_id=?", (cl["id"],))]
            groups.append((cl["id"], cl["name"], cl["threshold"], tracks))
        return self.describe(video_id, groups, faces_per_cluster)

    def describe(self, video_id: int, groups, faces_per_cluster: int = 12) -> list[dict]:
        """groups: (cluster id, name, threshold, track ids) → the dicts `clusters` returns (also for
        a clustering that is not stored, e.g. to compare methods). A group without tracks, or whose
        faces have no box to show, is left out: every cluster listed has faces for its sheet."""
        c = self.cat.conn
        out = []
        video = self.cat.video(video_id)
        step = 1.0 / 5.0
        if video and video["config"]:
            import json
            step = 1.0 / float(json.loads(video["config"]).get("ingest", {}).get("sample_fps", 5.0))
        for cid, name, threshold, track_ids in groups:
            track_ids = [int(t) for t in track_ids]
            if not track_ids:
                continue
            tr, faces = [], []
            for k in range(0, len(track_ids), 500):  # SQLite caps the variables of one statement
                chunk = track_ids[k:k + 500]
                marks = ",".join("?" * len(chunk))
                tr += c.execute(f"SELECT id, shot_idx, start_s, end_s FROM tracks WHERE id IN ({marks})", chunk).fetchall()
                faces += c.execute(
                    "SELECT tf.face_id, tf.quality, f.time_s, f.id AS frame_id, fc.x1, fc.y1, fc.x2, fc.y2, t.shot_idx"
                    " FROM track_faces tf JOIN tracks t ON t.id=tf.track_id JOIN faces fc ON fc.id=tf.face_id"
                    f" JOIN frames f ON f.id=fc.frame_id WHERE t.id IN ({marks}) AND fc.x2 > fc.x1 AND fc.y2 > fc.y1",
                    chunk).fetchall()
            faces.sort(key=lambda f: (-(f["quality"] or 0.0), f["face_id"]))
            if not tr or not faces:
                continue
            best, seen_shots, taken = [], set(), set()
            # one face per shot first, so the sheet shows the character in different shots
            for f in faces:
                if f["shot_idx"] not in seen_shots and len(best) < faces_per_cluster:
                    best.append(f)
                    seen_shots.add(f["shot_idx"])
                    taken.add(f["face_id"])
            for f in faces:
                if len(best) >= faces_per_cluster:
                    break
                if f["face_id"] not in taken:
                    best.append(f)
                    taken.add(f["face_id"])
            out.append({"cluster": cid, "video": video_id, "name": name, "tracks": len(tr),
                        "shots": sorted({t["shot_idx"] for t in tr}),
                        "screen_time_s": round(sum(t["end_s"] - t["start_s"] + step for t in tr), 2),
                        "first_s": round(min(t["start_s"] for t in tr), 3), "threshold": round(float(threshold), 4),
                        "faces": [{"face": f["face_id"], "frame": f["frame_id"], "time_s": f["time_s"],
                                   "box": [f["x1"], f["y1"], f["x2"], f["y2"]], "quality": round(f["quality"] or 0.0, 3)}
                                  for f in best]})
        out.sort(key=lambda d: (-d["screen_time_s"], d["first_s"]))
        return out

    def name(self, cluster_id: int, name: str) -> None:
        name = name.strip()
        if not name:
            raise InputError("a cluster name cannot be empty")
        c = self.cat.conn
        if c.execute("SELECT 1 FROM clusters WHERE id=?", (cluster_id,)).fetchone() is None:
            raise NotFoundError(f"no cluster with id {cluster_id} (see `castfinder cast`)")
        other = c.execute("SELECT id FROM clusters WHERE name=? AND id<>?", (name, cluster_id)).fetchone()
        if other is not None:
            raise NameTakenError(f"the name '{name}' is already used by cluster {other[0]}")
        c.execute("UPDATE clusters SET name=? WHERE id=?", (name, cluster_id))

    def cluster_video(self, cluster_id: int) -> int | None:
        """The video of a cluster, or None when there is no such cluster."""
        row = self.cat.conn.execute("SELECT video_id FROM clusters WHERE id=?", (cluster_id,)).fetchone()
        return None if row is None else int(row[0])

    def named(self, name: str) -> tuple[int, int, np.ndarray]:
        """(cluster id, video id, track vectors) of the cluster with this name."""
        ensure_schema(self.cat)
        row = self.cat.conn.execute("SELECT id, video_id FROM clusters WHERE name=?", (name,)).fetchone()
        if row is None:
            known = [r[0] for r in self.cat.conn.execute("SELECT name FROM clusters WHERE name IS NOT NULL ORDER BY name")]
            raise NotFoundError(f"no photos given and no cluster is named '{name}'"
                                + (f" (named: {', '.join(known)})" if known else " (name one with `castfinder cast name`)"))
        return row[0], row[1], self.cluster_vectors(row[0])

    def cluster_vectors(self, cluster_id: int) -> np.ndarray:
        rows = self.cat.conn.execute("SELECT vec FROM tracks WHERE cluster_id=? AND vec IS NOT NULL", (cluster_id,)).fetchall()
        return np.stack([np.frombuffer(r[0], np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)

    def nearest_clusters(self, vector: np.ndarray, video_id: int | None, margin: float = 1.0) -> list[tuple[int, float]]:
        """Clusters whose sphere holds this vector (distance <= threshold * margin), closest first."""
        q = "SELECT id, threshold, mean FROM clusters" + (" WHERE video_id=?" if video_id else "")
        rows = self.cat.conn.execute(q, (video_id,) if video_id else ()).fetchall()
        if not rows:
            return []
        means = np.stack([np.frombuffer(r["mean"], np.float64) for r in rows])
        d = distances(self.p.metric, np.asarray(vector, np.float64), means)
        hits = [(rows[i]["id"], float(d[i])) for i in np.argsort(d) if d[i] <= rows[i]["threshold"] * margin]
        return hits


def matched_threshold(raw: np.ndarray, projected: np.ndarray, threshold: float, metric: str = "l2") -> float:
    """The threshold in a projected space that keeps the same share of track pairs under it as
    `threshold` does in the original space (so Ducros's T needs no new value per metric)."""
    from .cast_clustering import pairwise_block
    n = len(raw)
    if n < 2:
        return threshold
    iu = np.triu_indices(n, 1)
    d_raw = pairwise_block(metric, np.asarray(raw, np.float64), np.asarray(raw, np.float64))[iu]
    d_new = pairwise_block(metric, np.asarray(projected, np.float64), np.asarray(projected, np.float64))[iu]
    share = float(np.mean(d_raw <= threshold))
    if share <= 0.0:
        return float(d_new.min()) * 0.999
    return float(np.quantile(d_new, share))


def forget_shots(catalogue, video_id: int, from_shot: int) -> None:
    """An ingest resumes at `from_shot` (or a video is removed): its tracks go, cluster means are
    recomputed from the tracks that stay, empty clusters go."""
    ensure_schema(catalogue)
    c = catalogue.conn
    c.execute("DELETE FROM track_faces WHERE track_id IN (SELECT id FROM tracks WHERE video_id=? AND shot_idx>=?)",
              (video_id, from_shot))
    c.execute("DELETE FROM tracks WHERE video_id=? AND shot_idx>=?", (video_id, from_shot))
    c.execute("DELETE FROM cast_shots WHERE video_id=? AND shot_idx>=?", (video_id, from_shot))
    face_metric.forget(catalogue, video_id)  # refitted as the resumed shots close
    for (cid,) in c.execute("SELECT id FROM clusters WHERE video_id=?", (video_id,)).fetchall():
        rows = c.execute("SELECT vec FROM tracks WHERE cluster_id=? AND vec IS NOT NULL", (cid,)).fetchall()
        if not rows:
            c.execute("DELETE FROM clusters WHERE id=?", (cid,))
        else:
            mean = np.mean([np.frombuffer(r[0], np.float32) for r in rows], axis=0).astype(np.float64)
            c.execute("UPDATE clusters SET mean=?, n_tracks=? WHERE id=?", (mean.tobytes(), len(rows), cid))
