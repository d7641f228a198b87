"""Face tracks inside one shot: detections on consecutive kept frames linked by box overlap and
embedding similarity (one-to-one per frame, so two faces of one frame never share a track)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from castfinder.stream.face_quality import face_quality


@dataclass
class Detection:
    face_id: int
    frame_id: int
    time_s: float
    box: np.ndarray
    vector: np.ndarray       # L2-normalised face vector
    quality: float


@dataclass
class Track:
    shot: int
    detections: list[Detection] = field(default_factory=list)

    @property
    def last(self) -> Detection:
        return self.detections[-1]

    def best(self, q: int = 1) -> list[Detection]:
        return sorted(self.detections, key=lambda d: -d.quality)[:q]

    def vector(self, q: int = 1) -> np.ndarray:
        """The best face's vector (q=1, the paper), or the quality-weighted mean of the best q faces'
        unit vectors, renormalised: one blurred or turned-away frame no longer decides who it is."""
        best = self.best(q)
        w = np.array([max(d.quality, 1e-3) for d in best])
        v = (np.stack([d.vector for d in best]) * w[:, None]).sum(0)
        return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)

    @property
    def quality(self) -> float:
        return max(d.quality for d in self.detections)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class TrackParams:
    min_iou: float = 0.1          # boxes must overlap this much ...
    min_sim_with_iou: float = 0.90  # ... and the faces look this alike (different people: ~0.83 on average),
    min_sim_alone: float = 0.94   # or the faces alone are this alike (a fast move, a dropped frame)
    max_gap_s: float = 6.0        # a track not seen for this long is closed (dedup thins still shots)
    f_min: int = 2                # tracks with fewer detections are dropped (posters, masks, misfires) ...


def link(shot: int, frames: list[tuple[int, float, list[Detection]]], p: TrackParams = TrackParams()) -> list[Track]:
    """frames: (frame_id, time_s, detections) in time order. Returns the kept tracks."""
    tracks: list[Track] = []
    for _, time_s, dets in frames:
        active = [t for t in tracks if time_s - t.last.time_s <= p.max_gap_s]
        assigned = set()
        if active and dets:
            score = np.full((len(active), len(dets)), -1.0)
            for i, t in enumerate(active):
                for j, d in enumerate(dets):
                    sim = float(t.last.vector @ d.vector)
                    ov = iou(t.last.box, d.box)
                    if (ov >= p.min_iou and sim >= p.min_sim_with_iou) or sim >= p.min_sim_alone:
                        score[i, j] = 0.5 * sim + 0.5 * ov
            rows, cols = linear_sum_assignment(-score)
            for i, j in zip(rows, cols):
                if score[i, j] >= 0:
                    active[i].detections.append(dets[j])
                    assigned.add(j)
        for j, d in enumerate(dets):
            if j not in assigned:
                tracks.append(Track(shot, [d]))
    # ... except in a shot with fewer kept frames than f_min (dedup keeps one frame of a still shot)
    need = min(p.f_min, len(frames))
    return [t for t in tracks if len(t.detections) >= need]


def shot_detections(catalogue, video_id: int, shot: int, feature: str) -> list[tuple[int, float, list[Detection]]]:
    """Every kept frame of a shot with its faces and their `feature` vectors, in time order."""
    import json
    rows = catalogue.conn.execute(
        "SELECT f.id AS frame_id, f.time_s, fc.id AS face_id, fc.x1, fc.y1, fc.x2, fc.y2, fc.prob, fc.landmarks,"
        " fc.sharpness, v.vec FROM frames f JOIN faces fc ON fc.frame_id=f.id"
        " JOIN vectors v ON v.face_id=fc.id AND v.feature=?"
        " WHERE f.video_id=? AND f.shot_idx=? ORDER BY f.time_s, fc.id", (feature, video_id, shot)).fetchall()
    n_frames = catalogue.conn.execute("SELECT id, time_s FROM frames WHERE video_id=? AND shot_idx=? ORDER BY time_s",
                                      (video_id, shot)).fetchall()
    by_frame: dict[int, list[Detection]] = {r["id"]: [] for r in n_frames}
    for r in rows:
        box = np.array([r["x1"], r["y1"], r["x2"], r["y2"]], np.float32)
        lm = json.loads(r["landmarks"])
        by_frame[r["frame_id"]].append(Detection(r["face_id"], r["frame_id"], r["time_s"], box,
                                                 np.frombuffer(r["vec"], np.float32),
                                                 face_quality(r["prob"], box, lm, r["sharpness"])))
    return [(r["id"], r["time_s"], by_frame[r["id"]]) for r in n_frames]
