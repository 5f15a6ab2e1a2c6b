"""Multiple-comparison corrections: Holm (family-wise error) and Benjamini-Hochberg (false discovery rate)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import false_discovery_control

from medad.errors import ConfigError


def adjust_pvalues(p_values: Any, method: str = "holm") -> np.ndarray:
    """Adjusted p-values; NaN entries stay NaN and are not counted in the family.

    Args:
        p_values: raw p-values of one family of tests.
        method: ``holm`` (step-down Bonferroni) or ``bh`` (Benjamini-Hochberg, via scipy) or ``none``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    if q.size == 0:
        return out
    if method == "holm":
        order = np.argsort(q, kind="stable")
        m = q.size
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj = np.empty_like(q)
        adj[order] = np.minimum(stepped, 1.0)
    elif method == "bh":
        adj = false_discovery_control(q, method="bh")
    elif method == "none":
        adj = q
    else:
        raise ConfigError(f"unknown correction {method!r}; use 'holm', 'bh' or 'none'")
    out[ok] = adj
    return out
