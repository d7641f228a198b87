"""Face verification on labelled pairs: accuracy at the best threshold and ROC AUC."""

from __future__ import annotations

import numpy as np


def best_threshold_accuracy(similarities: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Accuracy of `similarity >= t` at the best t, and that t."""
    order = np.sort(np.unique(similarities))
    candidates = np.concatenate([order, [order[-1] + 1e-6]]) if len(order) else np.array([0.0])
    best_acc, best_t = 0.0, 0.0
    for t in candidates:
        acc = float(np.mean((similarities >= t) == same))
        if acc > best_acc:
            best_acc, best_t = acc, float(t)
    return best_acc, best_t


def roc_auc(similarities: np.ndarray, same: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(same.astype(int), similarities))
