"""Scoring a cast against truth.json: which character each track is, BCubed, purity, and the
baselines (scikit-learn average-linkage agglomerative with one global threshold; DBSCAN).

Track labels (truth.json labels shots, not faces). A track takes the true shot holding its
midpoint. Its label is
  - the one character whose face is visible in that shot (`faces` has one name), or
  - when several are, the one among them whose reference photos (refs/) its vector matches best,
    if that similarity is at least `min_ref_sim` and beats the runner-up by `margin`;
  - otherwise the track is unlabelled and left out of the scores (people nobody labelled, or a
    crowded shot we cannot resolve)."""

from __future__ import annotations

import numpy as np


def true_shot(truth: dict, t: float) -> dict | None:
    for s in truth["shots"]:
        if s["start_s"] <= t < s["end_s"]:
            return s
    return truth["shots"][-1] if truth["shots"] and t >= truth["shots"][-1]["start_s"] else None


def label_tracks(truth: dict, tracks: list[dict], ref_vectors: dict[str, np.ndarray],
                 min_ref_sim: float = 0.9, margin: float = 0.02) -> list[str | None]:
    """tracks: dicts with start_s, end_s, vec. ref_vectors: character → (n, dim) photo vectors."""
    labels = []
    for tr in tracks:
        shot = true_shot(truth, (tr["start_s"] + tr["end_s"]) / 2)
        faces = shot["faces"] if shot else []
        if len(faces) == 1:
            labels.append(faces[0])
            continue
        sims = sorted(((float(np.max(ref_vectors[c] @ tr["vec"])), c) for c in faces if c in ref_vectors), reverse=True)
        if sims and sims[0][0] >= min_ref_sim and (len(sims) == 1 or sims[0][0] - sims[1][0] >= margin):
            labels.append(sims[0][1])
        else:
            labels.append(None)
    return labels


def bcubed(labels: list, clusters: list) -> dict:
    """BCubed precision/recall/F, purity and counts over the labelled items."""
    items = [(l, c) for l, c in zip(labels, clusters) if l is not None]
    if not items:
        return {"items": 0}
    L = np.array([hash(l) for l, _ in items])
    C = np.array([c for _, c in items])
    same_c = C[:, None] == C[None, :]
    same_l = L[:, None] == L[None, :]
    both = (same_c & same_l).sum(1)
    p = float(np.mean(both / same_c.sum(1)))
    r = float(np.mean(both / same_l.sum(1)))
    purity = sum(np.max(np.unique(L[C == c], return_counts=True)[1]) for c in np.unique(C)) / len(items)
    return {"items": len(items), "bcubed_p": round(p, 4), "bcubed_r": round(r, 4),
            "bcubed_f": round(2 * p * r / (p + r), 4) if p + r else 0.0, "purity": round(float(purity), 4),
            "clusters": int(len(np.unique(C))), "characters": int(len(np.unique(L)))}


def sklearn_agglomerative(vectors: np.ndarray, threshold: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering
    if len(vectors) < 2:
        return np.zeros(len(vectors), int)
    return AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                   distance_threshold=threshold).fit_predict(vectors)


def sklearn_dbscan(vectors: np.ndarray, eps: float) -> np.ndarray:
    from sklearn.cluster import DBSCAN
    if len(vectors) == 0:
        return np.zeros(0, int)
    labels = DBSCAN(eps=eps, min_samples=1, metric="cosine").fit_predict(vectors)
    return labels


# --- cast F1: clusters against the shots where each queried character is present -----------------

def cluster_true_shots(truth: dict, shot_spans: dict[int, tuple[float, float]],
                       track_shots: list[int], labels) -> dict:
    """True shots of each cluster: the system shots holding its tracks, each mapped to the true shot
    that holds the system shot's midpoint (as in scoring: index/evaluation.py true_shot_at).
    shot_spans: system shot index → (start_s, end_s); track_shots, labels: per track (a label
    None or negative is no cluster)."""
    out: dict = {}
    for t, lab in zip(track_true_shots(truth, shot_spans, track_shots), labels):
        if lab is None or (not isinstance(lab, str) and lab < 0):
            continue
        shots = out.setdefault(lab if isinstance(lab, str) else int(lab), set())
        if t is not None:
            shots.add(t)
    return out


def track_true_shots(truth: dict, shot_spans: dict[int, tuple[float, float]], track_shots: list[int]) -> list:
    """The true shot (index) of each track's system shot, by the system shot's midpoint."""
    from .evaluation import true_shot_at
    return [true_shot_at(truth, (shot_spans[s][0] + shot_spans[s][1]) / 2) for s in track_shots]


def cast_f1(truth: dict, characters: list[str], clusters: dict, track_labels: list | None = None,
            track_clusters: list | None = None, track_true: list | None = None) -> dict:
    """Cast F1 (issue 13): for each queried character, the cluster whose true shots best match the
    true shots where the character is `present` (F1 over true shots); mean over characters. A
    character no cluster touches scores 0.

    clusters: cluster key → set of true shot indices (cluster_true_shots). With the per-track
    lists (track_labels from label_tracks, track_clusters, track_true from track_true_shots) each
    character also gets
      - `clusters_touching`: clusters with a track whose true shot has the character in `faces`;
      - `clusters_majority`: clusters whose labelled tracks are mostly this character (label_tracks:
        the one face-visible character of the shot, or resolved by the refs photos)."""
    by_char = {}
    for ch in characters:
        rel = {s["index"] for s in truth["shots"] if ch in s["present"]}
        best, best_key = 0.0, None
        for key, shots in clusters.items():
            hit = len(shots & rel)
            f = 2 * hit / (len(shots) + len(rel)) if hit else 0.0
            if f > best:
                best, best_key = f, key
        by_char[ch] = {"f1": round(best, 4), "cluster": best_key, "true_shots": len(rel)}
    if track_clusters is not None and track_true is not None:
        faces_of = {s["index"]: set(s["faces"]) for s in truth["shots"]}
        for ch in characters:
            touching = {c for c, t in zip(track_clusters, track_true) if t is not None and ch in faces_of.get(t, ())}
            by_char[ch]["clusters_touching"] = len(touching)
        if track_labels is not None:
            votes: dict = {}
            for c, l in zip(track_clusters, track_labels):
                if l is not None:
                    votes.setdefault(c, {}).setdefault(l, 0)
                    votes[c][l] += 1
            majority = {}
            for c, v in votes.items():
                top = max(v.values())
                winners = [l for l, n in v.items() if n == top]
                if len(winners) == 1 and top * 2 > sum(v.values()):
                    majority[c] = winners[0]
            for ch in characters:
                by_char[ch]["clusters_majority"] = sum(1 for l in majority.values() if l == ch)
    mean = float(np.mean([v["f1"] for v in by_char.values()])) if by_char else 0.0
    return {"cast_f1": round(mean, 4), "per_character": by_char, "n_clusters": len(clusters)}
