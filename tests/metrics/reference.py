"""Slow, obviously-correct reference implementations used only by the tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score


def ref_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's ROC AUC."""
    return float(roc_auc_score(np.ravel(labels).astype(int), np.ravel(scores).astype(np.float64)))


def ref_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's average precision."""
    return float(average_precision_score(np.ravel(labels).astype(int), np.ravel(scores).astype(np.float64)))


def ref_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Brute-force sweep: F1 of ``score >= t`` for every distinct score t."""
    s, y = np.ravel(scores).astype(np.float64), np.ravel(labels).astype(bool)
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        tp = np.sum(pred & y)
        fp = np.sum(pred & ~y)
        fn = np.sum(~pred & y)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return float(best)


def ref_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, connectivity: int = 8) -> float:
    """Brute-force AUPRO: one (FPR, PRO) point per distinct score, per-component loops, trapezoid to the limit."""
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    structure = np.ones((3, 3)) if connectivity == 8 else None
    components = []
    for m, mask in zip(maps, masks, strict=True):
        labels, n = ndimage.label(mask, structure=structure)
        components.extend(m[labels == k] for k in range(1, n + 1))
    normal = maps[~masks]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(float(np.mean(normal >= t)))
        ys.append(float(np.mean([np.mean(c >= t) for c in components])))
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit
