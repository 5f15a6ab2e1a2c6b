"""DeLong's test and confidence interval for two correlated image-level AUROCs (fast algorithm of Sun & Xu 2014).

Valid for image-level AUROC of two models scored on the same images. It is not valid for pooled pixel AUROC
(pixels are not independent); use a paired cluster bootstrap of the difference for pixel metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from medad.errors import DataError
from medad.metrics._core import as_numpy


def delong_components(labels: Any, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs and placement values of K score vectors by midranks (Sun & Xu 2014, O(K n log n)).

    Args:
        labels: (n,) binary labels, 1 = abnormal.
        scores: (K, n) scores of K models.

    Returns:
        ``(auc (K,), v10 (K, m), v01 (K, k))``: AUROCs and the placement values of the m positives and k
        negatives (``v10[i]`` = fraction of negatives below positive i, ties count one half).
    """
    y = as_numpy(labels).astype(bool).ravel()
    s = np.atleast_2d(as_numpy(scores, np.float64))
    m, k = int(y.sum()), int((~y).sum())
    if m == 0 or k == 0:
        raise DataError("DeLong's test needs both abnormal and normal images")
    tz = rankdata(s, axis=1)
    tx = rankdata(s[:, y], axis=1)
    ty = rankdata(s[:, ~y], axis=1)
    v10 = (tz[:, y] - tx) / k
    v01 = 1.0 - (tz[:, ~y] - ty) / m
    auc = (tz[:, y].sum(axis=1) - m * (m + 1) / 2.0) / (m * k)
    return auc, v10, v01


def delong_covariance(labels: Any, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (K,) and their DeLong covariance matrix (K, K) for K models on the same images."""
    auc, v10, v01 = delong_components(labels, scores)
    m, k = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(auc), len(auc)))
    s01 = np.atleast_2d(np.cov(v01)) if k > 1 else np.zeros((len(auc), len(auc)))
    return auc, s10 / m + s01 / k


def delong_test(labels: Any, scores_a: Any, scores_b: Any, level: float = 0.95) -> dict[str, Any]:
    """Two-sided DeLong test of AUROC(a) = AUROC(b) and a Wald CI of the difference a - b.

    Returns:
        dict with ``auc_a``, ``auc_b``, ``estimate`` (difference), ``se``, ``z``, ``p_value``, ``ci_low``,
        ``ci_high``, ``n``, ``n_pos``, ``n_neg`` and ``settings``. Identical score vectors give z = 0, p = 1; a
        difference with zero DeLong variance gives z = p = NaN (the test is undefined there; never p = 0).
    """
    a = as_numpy(scores_a, np.float64).ravel()
    b = as_numpy(scores_b, np.float64).ravel()
    y = as_numpy(labels).ravel()
    if not (a.size == b.size == y.size):
        raise DataError(f"DeLong needs equal lengths, got {y.size} labels and {a.size}/{b.size} scores")
    auc, cov = delong_covariance(y, np.stack([a, b]))
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    elif diff == 0:
        z, p = 0.0, 1.0
    else:  # zero variance but a difference (e.g. AUROC 1 vs 0): the Wald test is undefined, not p = 0
        z, p = float("nan"), float("nan")
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    n_pos = int(np.sum(y.astype(bool)))
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "estimate": diff,
        "se": se,
        "z": float(z),
        "p_value": p,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "n": int(y.size),
        "n_pos": n_pos,
        "n_neg": int(y.size) - n_pos,
        "settings": {
            "test": "delong",
            "algorithm": "Sun & Xu 2014 midrank",
            "level": level,
            "alternative": "two-sided",
        },
    }
