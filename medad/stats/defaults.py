"""The one definition of the statistics defaults and of what a valid bootstrap setting is.

``medad.evaluation.evaluate``, the protocol schema (``statistics:``) and ``medad eval`` all read these constants, and
a test holds docs/metrics.md and docs/protocols.md to them, so the three entry points and the docs cannot drift.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from medad.errors import ConfigError

#: Bootstrap interval method: ``bca`` (bias-corrected and accelerated) or ``percentile``.
CI_METHOD = "bca"
#: Bootstrap resamples (Efron & Tibshirani recommend >= 2000 for BCa intervals); 0 turns intervals off.
CI_RESAMPLES = 2000
#: Confidence level of the intervals.
CI_LEVEL = 0.95
#: Seed of ``numpy.random.default_rng`` for the resamples.
CI_SEED = 0
CI_METHODS = ("bca", "percentile")


def resampling_p_value(n_extreme: int, n_valid: int) -> float:
    """One-sided Monte Carlo p-value ``(n_extreme + 1) / (n_valid + 1)``: never below ``1 / (B + 1)``.

    Counting the observed statistic as one of the resamples (Davison & Hinkley 1997, eq. 4.11; Phipson & Smyth
    2010) keeps the test valid and stops B resamples from claiming more than 1/(B+1).
    """
    return (int(n_extreme) + 1) / (int(n_valid) + 1)


def check_ci_settings(
    n_resamples: Any = CI_RESAMPLES,
    level: Any = CI_LEVEL,
    method: Any = CI_METHOD,
    *,
    names: tuple[str, str, str] = ("n_resamples", "level", "method"),
) -> None:
    """Refuse impossible bootstrap settings before any work starts.

    Args:
        n_resamples: an integer >= 0 (0: no intervals).
        level: the confidence level, strictly between 0 and 1.
        method: one of :data:`CI_METHODS`.
        names: how the caller calls the three settings (option or key names), used in the messages.

    Raises:
        ConfigError: a value is out of range, naming its option or key and the fix.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 0:
        raise ConfigError(
            f"{names[0]} must be a whole number >= 0 (0 turns confidence intervals off), got {n_resamples!r}; "
            f"use e.g. {CI_RESAMPLES}"
        )
    if (
        isinstance(level, bool)
        or not isinstance(level, numbers.Real)
        or not math.isfinite(float(level))
        or not 0.0 < float(level) < 1.0
    ):
        raise ConfigError(
            f"{names[1]} must be strictly between 0 and 1, got {level!r}; use e.g. {CI_LEVEL} (a fraction, not a "
            "percentage)"
        )
    if method not in CI_METHODS:
        raise ConfigError(f"{names[2]} must be one of {', '.join(CI_METHODS)}, got {method!r}")
