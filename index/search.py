"""Find the shots where a character appears, from photos (or stored vectors).

Each photo gives one query vector: its largest face through the face embedder when a face is
found, else the whole photo through the frame embedder (the report's rule). Each vector's top-k
hits become shot scores (a shot's score = its best hit), then photos are fused."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from castfinder.errors import InputError, NotFoundError

from .fusion import fuse
from .store import IndexStore


@dataclass
class QueryVector:
    photo: str
    feature: str
    vector: np.ndarray
    kind: str                     # "face" or "frame"
    note: str = ""


@dataclass
class ShotHit:
    video_id: int
    shot: int
    start_s: float
    end_s: float
    score: float
    best_frame_s: float
    best_frame_id: int
    best_face_id: int | None
    photos: list[str] = field(default_factory=list)


def photo_vectors(photos: list[tuple[str, np.ndarray]], detector, face_embedder, frame_embedder,
                  use_both: bool = False) -> list[QueryVector]:
    from models.photo import largest_face

    out = []
    for name, image in photos:
        face, n_faces = largest_face(detector, image) if face_embedder is not None else (None, 0)
        if face is not None:
            note = f"{n_faces} faces, used the largest" if n_faces > 1 else "face"
            out.append(QueryVector(name, face_embedder.name, face_embedder.embed_faces(image, [face])[0], "face", note))
        if (face is None or use_both) and frame_embedder is not None:
            note = "no face found, used the whole photo" if face is None else "whole photo"
            out.append(QueryVector(name, frame_embedder.name, frame_embedder.embed_frames([image])[0], "frame", note))
        if face is None and frame_embedder is None:
            raise InputError(f"{name}: no face found, and no frame features are indexed to fall back on")
    return out


def _shot_scores(store: IndexStore, scores: np.ndarray, ids: np.ndarray, video_id: int | None):
    """One photo's hits → (shot keys, best score per shot, vector id of that best hit)."""
    video, shot = store.vector_map.lookup(ids)
    ok = video >= 0
    if video_id is not None:
        ok &= video == video_id
    video, shot, scores, ids = video[ok], shot[ok], scores[ok], ids[ok]
    keys = (video.astype(np.int64) << 32) | shot.astype(np.int64)
    # FAISS returns hits best first, so the first occurrence of each shot is its best hit
    uniq, first = np.unique(keys, return_index=True)
    return uniq, scores[first], ids[first]


def search_shots(store: IndexStore, queries: list[QueryVector], top_k: int = 5000, fusion: str = "max",
                 video_id: int | None = None, limit: int | None = None) -> list[ShotHit]:
    if not queries:
        raise InputError("no query vectors")
    store.vector_map.sync(store.catalogue)
    per_query: list[dict] = []
    best: dict[tuple[int, int], tuple[float, int]] = {}  # shot → (score, vector id)
    matched: dict[tuple[int, int], set[str]] = {}
    for q in queries:
        index = store.feature(q.feature)
        # a filter on one video: ask for more so that other videos' hits do not crowd it out
        k = top_k if video_id is None else min(index.ntotal, top_k * 4)
        scores, ids = index.search(q.vector[None], max(1, k))
        keys, shot_scores, shot_ids = _shot_scores(store, scores[0], ids[0], video_id)
        shots = {}
        for key, sc, vid in zip(keys.tolist(), shot_scores.tolist(), shot_ids.tolist()):
            key = (key >> 32, key & 0xFFFFFFFF)
            shots[key] = sc
            if sc > best.get(key, (-np.inf, 0))[0]:
                best[key] = (sc, vid)
            matched.setdefault(key, set()).add(q.photo)
        per_query.append(shots)
    fused = fuse(per_query, fusion)
    if limit:
        fused = fused[:limit]
    best_rows = store.catalogue.vector_rows([best[k][1] for k, _ in fused])
    shot_rows = store.catalogue.shot_spans([k for k, _ in fused])
    hits = []
    for key, score in fused:
        srow, brow = shot_rows.get(key), best_rows.get(best[key][1])
        if srow is None or brow is None:
            continue  # removed by a concurrent rebuild
        hits.append(ShotHit(key[0], key[1], srow[0], srow[1], round(score, 6), brow["time_s"],
                            brow["frame_id"], brow["face_id"], sorted(matched[key])))
    return hits


def indexed_until(store: IndexStore, video_id: int | None) -> float | None:
    rows = [store.catalogue.video(video_id)] if video_id else store.catalogue.videos()
    if video_id and rows[0] is None:
        raise NotFoundError(f"no video with id {video_id}")
    vals = [r["indexed_until_s"] for r in rows if r is not None]
    return max(vals) if vals else None
