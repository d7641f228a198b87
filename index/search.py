"""Find the shots where a character appears, from photos (or stored vectors).

Each photo gives one query vector: its largest face through the face embedder when a face is
found, else the whole photo through the frame embedder (the report's rule). Each vector's top-k
hits become shot scores (a shot's score = its best hit), then photos are fused."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from castfinder.core.errors import InputError, NotFoundError

from .fusion import fuse_arrays
from .store import IndexStore


@dataclass
class QueryVector:
    photo: str
    feature: str
    vector: np.ndarray
    kind: str                     # "face" or "frame"
    note: str = ""
    weight: float = 1.0           # expansion vectors count less than the photos themselves


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
                  use_both: bool = False, lenient: bool = True) -> list[QueryVector]:
    """lenient: a photo where the usual pass finds no face gets a second, harder look (models/photo.py)."""
    from castfinder.models.photo import photo_face

    out = []
    for name, image in photos:
        face = None
        if face_embedder is not None:
            face_image, face, _, note = photo_face(detector, image, lenient)
        if face is not None:
            out.append(QueryVector(name, face_embedder.name, face_embedder.embed_faces(face_image, [face])[0], "face", note))
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


def _blend_tracks(part, track_part, weight: float):
    """A shot's face score blended with its best track's: a track describes a person over the whole
    shot (its best faces), a single frame can be a profile or a blur. Shots without a usable track
    keep their face score."""
    keys, scores, ids = part
    tkeys, tscores = track_part
    if weight <= 0 or len(tkeys) == 0 or len(keys) == 0:
        return part
    pos = np.clip(np.searchsorted(tkeys, keys), 0, len(tkeys) - 1)
    has = tkeys[pos] == keys
    blended = np.where(has, (1 - weight) * scores + weight * tscores[pos], scores)
    return keys, blended, ids


CONTEXT_HITS = 2000  # face hits per photo re-ranked by context; the rest count as of average context


def _rerank_by_context(store: IndexStore, queries: list[QueryVector], hits_of: list, weight: float,
                       video_id: int | None) -> None:
    """Transductive re-ranking of face hits by what surrounds each face (stream/face_context.py).
    A query photo is a stranger to the video (another light, another age, a sharper camera), but
    the video's own best hit for it shows this person as the video does, clothes and hair
    included; within a video people keep those through a scene. So each face hit gains
    weight x (how alike its surroundings are to the best hit's), both standardised over the hits
    (z-scores, in the units of the face scores). One seed per video: clothes mean nothing across
    films. The new order is applied to the video's own shot scores (its k-th shot keeps the k-th
    best score), so a video where the character is absent, whose seed is a stranger, is shuffled
    inside but not lifted above other videos. A face without a descriptor (indexed before they existed)
    counts as average. devhard MAP 0.792 -> 0.841 at weight 1; dev stays 1.000."""
    rows = [i for i, q in enumerate(queries) if q.kind == "face"]
    if weight <= 0 or not rows:
        return
    heads = {}
    for i in rows:
        scores, ids = hits_of[i]
        video, shot = store.vector_map.lookup(ids)
        ok = (ids >= 0) & (video >= 0)
        if video_id is not None:
            ok &= video == video_id
        pos = np.flatnonzero(ok)[:CONTEXT_HITS]
        heads[i] = (pos, video[pos], shot[pos])
    wanted = np.unique(np.concatenate([hits_of[i][1][pos] for i, (pos, _, _) in heads.items()]))
    found = store.catalogue.face_contexts(wanted.tolist())
    if not found:
        return
    have_all = np.array([int(w) in found for w in wanted])
    table = np.zeros((len(wanted), len(next(iter(found.values())))), np.float32)
    table[have_all] = np.stack([found[int(w)] for w in wanted[have_all]])
    rows_of = {i: np.searchsorted(wanted, hits_of[i][1][pos]) for i, (pos, _, _) in heads.items()}
    seeds: dict[int, tuple[float, int]] = {}  # video -> (score, row in table) of its best hit with a descriptor
    for i, (pos, videos, _) in heads.items():
        scores = hits_of[i][0][pos]
        for v in np.unique(videos).tolist():
            cand = np.flatnonzero((videos == v) & have_all[rows_of[i]])
            if len(cand):
                j = cand[np.argmax(scores[cand])]
                if scores[j] > seeds.get(v, (-np.inf, 0))[0]:
                    seeds[v] = (float(scores[j]), int(rows_of[i][j]))
    for i, (pos, videos, shots) in heads.items():
        scores, ids = hits_of[i]
        scores = scores.astype(np.float32).copy()
        for v, (_, seed) in seeds.items():
            in_video = videos == v
            sel, rows = pos[in_video], rows_of[i][in_video]
            have = have_all[rows]
            if have.sum() < 3:
                continue
            sim = table[rows] @ table[seed]
            s_std = float(np.std(scores[sel]))
            c_mean, c_std = float(np.mean(sim[have])), float(np.std(sim[have]))
            if s_std <= 0 or c_std <= 0:
                continue
            adjusted = scores[sel] + (weight * s_std * np.where(have, (sim - c_mean) / c_std, 0.0)).astype(np.float32)
            scores[sel] = _reorder_shots(scores[sel], adjusted, shots[in_video])
        order = np.argsort(-scores, kind="stable")  # shots take their best hit from the first one seen
        hits_of[i] = (scores[order], ids[order])


def _reorder_shots(raw: np.ndarray, adjusted: np.ndarray, shots: np.ndarray) -> np.ndarray:
    """One video's hits: its shots put in the order of their best adjusted hit, on the video's own shot
    scores (the k-th shot gets the k-th best of the shots' best raw scores), so one video's re-ranking
    cannot lift it above another's hits: its seed may be a stranger. Each shot's best adjusted hit
    carries the shot's new score, its other hits no more than that."""
    uniq, inv = np.unique(shots, return_inverse=True)
    best_raw = np.full(len(uniq), -np.inf, np.float32)
    best_adj = np.full(len(uniq), -np.inf, np.float32)
    np.maximum.at(best_raw, inv, raw)
    np.maximum.at(best_adj, inv, adjusted)
    new = np.empty(len(uniq), np.float32)
    new[np.argsort(-best_adj, kind="stable")] = np.sort(best_raw)[::-1]
    out = np.minimum(raw, new[inv])
    order = np.argsort(-adjusted, kind="stable")
    _, first = np.unique(inv[order], return_index=True)  # each shot's best adjusted hit: its first in that order
    out[order[first]] = new
    return out


SCENE_TAIL_K = 1000  # frame hits per frame vector of the best shot


def _scene_tail(store: IndexStore, top_key: int, feature: str, top_k: int, video_id: int | None):
    """Shots that look like the best-scoring shot as whole frames (its frame vectors as queries):
    the same set, light and clothes. Used only below every face hit, for shots where the character
    shows no usable face (the back of a head, a face too small or dark to detect)."""
    vectors = store.catalogue.shot_frame_vectors(feature, top_key >> 32, top_key & 0xFFFFFFFF)
    if vectors is None:
        return None
    index = store.feature(feature)
    k = max(top_k, SCENE_TAIL_K)  # its own budget: a small top-k for faces must not starve the tail
    k = k if video_id is None else min(index.ntotal, k * 4)
    scores, ids = index.search(vectors, max(1, k))
    keys, sims, vids = (np.concatenate(a) for a in zip(*(_shot_scores(store, sc, i, video_id)
                                                       for sc, i in zip(scores, ids))))
    order = np.argsort(-sims, kind="stable")
    keys, first = np.unique(keys[order], return_index=True)  # each shot's best similarity
    best = order[first]
    return keys, sims[best], vids[best]


def search_shots(store: IndexStore, queries: list[QueryVector], top_k: int = 5000, fusion: str = "max",
                 video_id: int | None = None, limit: int | None = None, tracks=None,
                 track_weight: float = 0.0, scene_feature: str | None = None,
                 context_weight: float = 0.0) -> list[ShotHit]:
    """tracks: a TrackVectors of the face feature (synced by the caller); track_weight: how much of
    a shot's score its best track gives (0: faces only). scene_feature: a frame feature; when a face
    query found shots, the shots no face hit reached follow them, ranked by how alike their frames
    are to the best shot's (scores below every face hit's). context_weight: face hits re-ranked by
    how alike their surroundings are to the best hit's (_rerank_by_context; 0: off)."""
    if not queries:
        raise InputError("no query vectors")
    store.vector_map.sync(store.catalogue)
    hits_of: list = [None] * len(queries)
    by_feature: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_feature.setdefault(q.feature, []).append(i)
    for feature, idxs in by_feature.items():  # one FAISS call per feature: a batch scans the index once
        index = store.feature(feature)
        # a filter on one video: ask for more so that other videos' hits do not crowd it out
        k = top_k if video_id is None else min(index.ntotal, top_k * 4)
        scores, ids = index.search(np.stack([queries[i].vector for i in idxs]), max(1, k))
        for row, i in enumerate(idxs):
            hits_of[i] = (scores[row], ids[row])
    _rerank_by_context(store, queries, hits_of, context_weight, video_id)
    parts = [_shot_scores(store, scores, ids, video_id) for scores, ids in hits_of]
    if tracks is not None and track_weight > 0:
        face_q = [i for i, q in enumerate(queries) if q.kind == "face" and q.feature == tracks.feature]
        if face_q:
            per = tracks.shot_scores(np.stack([queries[i].vector for i in face_q]), video_id)
            for i, tp in zip(face_q, per):
                parts[i] = _blend_tracks(parts[i], tp, track_weight)
    all_keys = np.concatenate([p[0] for p in parts])
    all_scores = np.concatenate([p[1] * q.weight for p, q in zip(parts, queries)]).astype(np.float64)
    all_ids = np.concatenate([p[2] for p in parts])
    all_q = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
    keys, fused = fuse_arrays(all_keys, all_scores, all_q, fusion)
    if scene_feature and len(keys) and any(q.kind == "face" for q in queries):
        tail = _scene_tail(store, int(keys[0]), scene_feature, top_k, video_id)
        if tail is not None:
            tk, ts, ti = tail
            new = ~np.isin(tk, keys)
            tk, ts, ti = tk[new], ts[new], ti[new]
            order = np.argsort(-ts, kind="stable")
            tk, ts, ti = tk[order], ts[order], ti[order]
            tail_scores = float(np.min(fused)) - (1.0 - ts)  # below every face hit, in frame-similarity order
            keys, fused = np.concatenate([keys, tk]), np.concatenate([fused, tail_scores])
            all_keys, all_scores = np.concatenate([all_keys, tk]), np.concatenate([all_scores, tail_scores])
            all_ids, all_q = np.concatenate([all_ids, ti]), np.concatenate([all_q, np.full(len(tk), -1)])
    if limit:
        keys, fused = keys[:limit], fused[:limit]
    # for the returned shots only: the best hit (its frame, its face) and which photos found them
    wanted = np.isin(all_keys, keys)
    best: dict[int, tuple[float, int]] = {}
    matched: dict[int, set[str]] = {}
    for k, sc, vid, qi in zip(all_keys[wanted].tolist(), all_scores[wanted].tolist(), all_ids[wanted].tolist(),
                              all_q[wanted].tolist()):
        if sc > best.get(k, (-np.inf, 0))[0]:
            best[k] = (sc, vid)
        matched.setdefault(k, set()).add(queries[qi].photo if qi >= 0 else "scene of the best shot")
    best_rows = store.catalogue.vector_rows([best[k][1] for k in keys.tolist()])
    shot_rows = store.catalogue.shot_spans([(k >> 32, k & 0xFFFFFFFF) for k in keys.tolist()])
    hits = []
    for k, score in zip(keys.tolist(), fused.tolist()):
        key = (k >> 32, k & 0xFFFFFFFF)
        srow, brow = shot_rows.get(key), best_rows.get(best[k][1])
        if srow is None or brow is None:
            continue  # removed by a concurrent rebuild
        hits.append(ShotHit(key[0], key[1], srow[0], srow[1], round(score, 6), brow["time_s"],
                            brow["frame_id"], brow["face_id"], sorted(matched[k])))
    return hits


def indexed_until(store: IndexStore, video_id: int | None) -> float | None:
    rows = [store.catalogue.video(video_id)] if video_id else store.catalogue.videos()
    if video_id and rows[0] is None:
        raise NotFoundError(f"no video with id {video_id}")
    vals = [r["indexed_until_s"] for r in rows if r is not None]
    return max(vals) if vals else None
