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
