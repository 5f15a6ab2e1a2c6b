"""Bootstrap confidence intervals of an evaluation's metrics, and a record of how they were drawn.

Per class and pooled scopes resample images stratified by label (or ``group_id`` clusters where some cluster
holds several images); the class-mean scope resamples within each class. Every interval is bounded to [0, 1]
(every metric here is a fraction). :class:`Intervals` records the resampling units, strata and interval methods
actually used, which ``metrics.json`` reports beside the requested settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from medad.evaluation.accumulation import Accumulated
from medad.evaluation.rows import ALL_METRICS
from medad.metrics import MEAN, NotApplicable
from medad.stats import bootstrap_ci
from medad.stats.defaults import CI_LEVEL, CI_METHOD, CI_RESAMPLES, CI_SEED

DEFAULT_CI = {"n_resamples": CI_RESAMPLES, "seed": CI_SEED, "method": CI_METHOD, "level": CI_LEVEL}
"""The bootstrap settings of an evaluation when none are given (:mod:`medad.stats.defaults`)."""

Interval = tuple[float | None, float | None]


class Intervals:
    """Draws the intervals of one evaluation and records what the bootstrap did.

    Args:
        ci: bootstrap settings ``n_resamples``, ``seed``, ``method``, ``level`` (all present).
        metrics: the metrics the evaluation reports (only their interval methods are counted).
    """

    def __init__(self, ci: Mapping[str, Any], metrics: list[str]) -> None:
        self.ci = ci
        self.metrics = metrics
        self.units: set[str] = set()
        self.strata: set[str] = set()
        self.methods_used: dict[str, int] = {}

    def used_settings(self) -> dict[str, Any]:
        """What the bootstrap actually did: resampling unit(s), stratification and interval method(s)."""
        if not self.units:
            return {"resampling_unit": "none (no bootstrap was run)", "stratification": "none"}
        units = sorted(self.units)
        names = {"image": "image", "group_id": "group_id clusters"}
        out: dict[str, Any] = {
            "resampling_unit": " and ".join(names[u] for u in units)
            + (" (group_id where some cluster holds more than one image)" if len(units) > 1 else ""),
            "stratification": "; ".join(sorted(self.strata)),
        }
        if self.methods_used:
            out["method_used"] = ", ".join(f"{m} ({n} intervals)" for m, n in sorted(self.methods_used.items()))
        return out

    def interval(
        self,
        acc: Accumulated,
        model: str,
        dataset: str,
        classes: list[str],
        exact: Mapping[str, float | NotApplicable],
        mean: bool,
    ) -> dict[str, Interval]:
        """The interval of every metric over ``classes`` (``mean``: of the class mean); empty without a bootstrap."""
        if int(self.ci["n_resamples"]) <= 0:
            return {}
        rows_all = acc.rows_of(model, dataset, classes)
        if rows_all.size == 0:
            return {}
        cls = acc.manifest["class_name"].astype(str).to_numpy()[rows_all]
        if mean:
            statistic = class_mean_statistic(acc, model, dataset, rows_all, cls, classes)
            strata: np.ndarray | None = cls
        else:
            statistic = acc.statistic(model, dataset, rows_all)
            strata = None
        groups = acc.groups_for(rows_all)
        if groups is None:
            lab = acc.labels[rows_all].astype(str)
            strata = lab if strata is None else np.char.add(np.char.add(strata.astype(str), "|"), lab)
        self._note(groups is None, mean)
        est = np.array([float(exact[k]) if not isinstance(exact[k], NotApplicable) else np.nan for k in ALL_METRICS])
        res = bootstrap_ci(
            statistic,
            rows_all.size,
            n_resamples=int(self.ci["n_resamples"]),
            seed=int(self.ci["seed"]),
            groups=groups,
            strata=None if strata is None else strata.tolist(),
            method=self.ci["method"],
            level=float(self.ci["level"]),
            estimate=est,
            bounds=(0.0, 1.0),  # every metric here is a fraction
        )
        for k, r in zip(ALL_METRICS, res, strict=True):
            if k in self.metrics and np.isfinite(r.ci_low):
                self.methods_used[r.method_used] = self.methods_used.get(r.method_used, 0) + 1
        return {k: (r.ci_low, r.ci_high) for k, r in zip(ALL_METRICS, res, strict=True)}

    def resampled(self, by_image: bool) -> None:
        """Record one bootstrap's resampling unit (images, or ``group_id`` clusters)."""
        self.units.add("image" if by_image else "group_id")

    def _note(self, by_image: bool, mean: bool) -> None:
        self.resampled(by_image)
        by = ["class_name"] if mean else []
        by += ["label"] if by_image else []
        scope = f"{MEAN} intervals" if mean else "per-class and pooled intervals"
        self.strata.add(f"{scope}: by {' and '.join(by)}" if by else f"{scope}: none")


def class_mean_statistic(
    acc: Accumulated, model: str, dataset: str, rows: np.ndarray, cls: np.ndarray, classes: list[str]
) -> Callable[[np.ndarray], np.ndarray]:
    """The bootstrap statistic of the class mean: each class's statistic on its own columns, averaged."""
    stats = [(np.flatnonzero(cls == c), acc.statistic(model, dataset, rows[cls == c])) for c in classes]

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.mean([f(w[:, cols]) for cols, f in stats], axis=0)

    return statistic
