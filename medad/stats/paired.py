"""Paired per-image tests of two models on the same images, with effect sizes.

* :func:`wilcoxon_test` - Wilcoxon signed-rank (scipy), effect size: matched-pairs rank-biserial correlation.
* :func:`sign_flip_test` - sign-flip permutation test of the mean difference (exact enumeration for <= 16
  non-zero pairs, seeded Monte Carlo otherwise), effect size: Cohen's d_z = mean(d) / sd(d).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy.stats import rankdata, wilcoxon

from medad.errors import DataError
from medad.metrics._core import as_numpy
from medad.stats.defaults import resampling_p_value


def _differences(a: Any, b: Any) -> np.ndarray:
    a, b = as_numpy(a, np.float64).ravel(), as_numpy(b, np.float64).ravel()
    if a.size != b.size:
        raise DataError(f"paired test needs equal lengths, got {a.size} and {b.size}")
    d = a - b
    return d[np.isfinite(d)]


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (W+ - W-) / (W+ + W-); zero differences are dropped."""
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def wilcoxon_test(a: Any, b: Any) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired values a vs b (pairs with a NaN are dropped).

    Returns:
        dict with ``estimate`` (mean of a - b), ``median_difference``, ``statistic``, ``p_value``,
        ``effect_size`` (rank-biserial), ``n`` and ``settings``. All-zero differences give p = 1.
    """
    d = _differences(a, b)
    if d.size == 0:
        raise DataError("paired test needs at least one pair with defined values")
    if np.all(d == 0):
        stat, p = 0.0, 1.0
    else:
        res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        stat, p = float(res.statistic), float(res.pvalue)
    return {
        "estimate": float(d.mean()),
        "median_difference": float(np.median(d)),
        "statistic": stat,
        "p_value": p,
        "effect_size": rank_biserial(d),
        "effect_size_name": "rank_biserial",
        "n": int(d.size),
        "settings": {
            "test": "wilcoxon",
            "zero_method": "wilcox",
            "alternative": "two-sided",
            "implementation": "scipy.stats.wilcoxon",
        },
    }


def sign_flip_test(a: Any, b: Any, n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Two-sided paired sign-flip permutation test of mean(a - b) = 0.

    Returns:
        dict with ``estimate``, ``p_value``, ``effect_size`` (Cohen's d_z), ``n``, ``exact`` and ``settings``.
    """
    d = _differences(a, b)
    if d.size == 0:
        raise DataError("paired test needs at least one pair with defined values")
    obs = abs(d.mean())
    nz = d[d != 0]
    exact = nz.size <= 16
    if nz.size == 0:
        p = 1.0
    elif exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=nz.size)))
        means = np.abs(signs @ nz) / d.size
        p = float(np.mean(means >= obs - 1e-12 * max(obs, 1.0)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((-1.0, 1.0), size=(n_resamples, nz.size))
        means = np.abs(signs @ nz) / d.size
        p = resampling_p_value(int(np.sum(means >= obs - 1e-12 * max(obs, 1.0))), n_resamples)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return {
        "estimate": float(d.mean()),
        "p_value": p,
        "effect_size": float(d.mean() / sd) if sd > 0 else 0.0,
        "effect_size_name": "cohens_dz",
        "n": int(d.size),
        "exact": exact,
        "settings": {
            "test": "sign_flip",
            "n_resamples": None if exact else n_resamples,
            "seed": None if exact else seed,
            "alternative": "two-sided",
        },
    }
