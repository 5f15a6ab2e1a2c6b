"""Intervals of bounded metrics never leave the metric's range, even after the binned-grid shift."""

from __future__ import annotations

import numpy as np

from medad.stats.bootstrap import bootstrap_ci, mean_statistic


def test_shifted_replicates_are_clipped_to_the_metric_range() -> None:
    values = np.array([0.0] * 15 + [1.0] * 5)  # mean 0.25; its replicates spread by about +-0.2
    kwargs = {"n_resamples": 400, "seed": 0, "method": "percentile", "estimate": np.array([0.02])}
    unbounded = bootstrap_ci(mean_statistic(values), values.size, **kwargs)[0]
    bounded = bootstrap_ci(mean_statistic(values), values.size, bounds=(0.0, 1.0), **kwargs)[0]
    assert unbounded.ci_low < 0.0  # the shift alone would claim an impossible value
    assert 0.0 <= bounded.ci_low <= bounded.estimate <= bounded.ci_high <= 1.0
    assert bounded.ci_high == unbounded.ci_high  # only the impossible part changes
