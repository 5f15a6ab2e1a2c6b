"""Paired comparisons of models on the same images, with multiple-comparison-adjusted p-values.

Image AUROC: DeLong's test; Dice / IoU: the Wilcoxon signed-rank test over the abnormal images (with a paired
bootstrap interval of the mean difference); pixel AUROC / AP and AUPRO: a paired bootstrap of the difference.
All comparisons written are one family for the ``holm`` or ``bh`` correction.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from medad.errors import ConfigError
from medad.evaluation.accumulation import Accumulated
from medad.evaluation.intervals import Intervals
from medad.evaluation.rows import ALL_METRICS
from medad.metrics import POOLED, NotApplicable
from medad.stats import adjust_pvalues, delong_test, mean_statistic, paired_bootstrap_test, wilcoxon_test

COMPARED = {
    "image_auroc": "delong",
    "pixel_auroc": "paired_bootstrap",
    "pixel_ap": "paired_bootstrap",
    "aupro": "paired_bootstrap",
    "dice": "wilcoxon",
    "iou": "wilcoxon",
}
"""The test of each compared metric (metrics not named here are not compared)."""


def model_pairs(models: list[str], comparisons: str | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The model pairs to compare: ``"all"`` pairs, an explicit list, or none.

    Raises:
        ConfigError: a pair names a model that is not evaluated.
    """
    if comparisons is None:
        return []
    if comparisons == "all":
        return list(itertools.combinations(models, 2))
    if isinstance(comparisons, str):
        raise ConfigError(f"comparisons={comparisons!r}: give 'all', a list of (model_a, model_b) pairs, or None")
    pairs = [(str(a), str(b)) for a, b in comparisons]
    bad = sorted({x for p in pairs for x in p} - set(models))
    if bad:
        raise ConfigError(f"comparison names unknown model(s) {bad}; models are {models}")
    return pairs


def compare(
    acc: Accumulated, intervals: Intervals, pairs: list[tuple[str, str]], metrics: list[str], correction: str
) -> list[dict[str, Any]]:
    """Every comparison of every pair, per class and pooled (datasets with several classes), p-values adjusted."""
    out: list[dict[str, Any]] = []
    wanted = [k for k in COMPARED if k in metrics]
    n_res, seed = max(int(intervals.ci["n_resamples"]), 0), int(intervals.ci["seed"])
    for a, b in pairs:
        for dataset in (d for d in acc.datasets if acc.covered(a, d) and acc.covered(b, d)):
            classes = acc.classes(dataset)
            scopes = [(c, [c]) for c in classes] + ([(POOLED, classes)] if len(classes) > 1 else [])
            for class_name, cls in scopes:
                rows = acc.rows_of(a, dataset, cls)
                y = acc.labels[rows] == 1
                base = {"dataset": dataset, "class_name": class_name, "model_a": a, "model_b": b}
                for metric in wanted:
                    res = _compare(acc, intervals, metric, a, b, dataset, rows, y, n_res, seed)
                    if res is not None:
                        out.append({**base, "metric": metric, **res, "correction": correction})
    adjusted = adjust_pvalues([r["p_value"] if r["p_value"] is not None else np.nan for r in out], correction)
    for r, p in zip(out, adjusted, strict=True):
        r["p_adjusted"] = float(p) if np.isfinite(p) else None
    return out


def _compare(
    acc: Accumulated,
    intervals: Intervals,
    metric: str,
    a: str,
    b: str,
    dataset: str,
    rows: np.ndarray,
    y: np.ndarray,
    n_res: int,
    seed: int,
) -> dict[str, Any] | None:
    """One comparison by the metric's test (:data:`COMPARED`), or ``None`` where it cannot be computed."""
    if COMPARED[metric] == "delong":
        return _delong(acc, a, b, rows, y)
    if COMPARED[metric] == "wilcoxon":
        return _wilcoxon(acc, metric, a, b, rows, y, n_res, seed)
    cls = sorted(set(acc.manifest["class_name"].astype(str).to_numpy()[rows]))
    pa, pb = acc.point(a, dataset, cls)[metric], acc.point(b, dataset, cls)[metric]
    if isinstance(pa, NotApplicable) or isinstance(pb, NotApplicable) or n_res <= 0:
        return None
    k = ALL_METRICS.index(metric)
    sa, sb = acc.statistic(a, dataset, rows), acc.statistic(b, dataset, rows)
    est = np.full(len(ALL_METRICS), np.nan)
    est[k] = float(pa) - float(pb)
    groups = acc.groups_for(rows)
    intervals.resampled(groups is None)
    r = paired_bootstrap_test(sa, sb, rows.size, estimate=est, n_resamples=n_res, seed=seed, groups=groups)[k]
    return {
        "test": "paired_bootstrap",
        "estimate": r["estimate"],
        "ci_low": r["ci_low"],
        "ci_high": r["ci_high"],
        "p_value": r["p_value"],
        "effect_size": r["estimate"],
        "n": int(rows.size),
        "n_resamples": n_res,
        "n_valid": r["n_valid"],
    }


def _delong(acc: Accumulated, a: str, b: str, rows: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    if y.all() or not y.any():
        return None
    r = delong_test(y, acc.image_scores[a][rows], acc.image_scores[b][rows])
    return {
        "test": "delong",
        "estimate": r["estimate"],
        "ci_low": r["ci_low"],
        "ci_high": r["ci_high"],
        "p_value": r["p_value"],
        "effect_size": r["estimate"],
        "n": r["n"],
        "n_resamples": None,
    }


def _wilcoxon(
    acc: Accumulated, metric: str, a: str, b: str, rows: np.ndarray, y: np.ndarray, n_res: int, seed: int
) -> dict[str, Any] | None:
    va, vb = acc.per_image[a][metric][rows[y]], acc.per_image[b][metric][rows[y]]
    ok = np.isfinite(va) & np.isfinite(vb)
    if not ok.any():
        return None
    r = wilcoxon_test(va[ok], vb[ok])
    low = high = None
    if n_res > 0:
        boot = paired_bootstrap_test(
            mean_statistic(va[ok]), mean_statistic(vb[ok]), int(ok.sum()), n_resamples=n_res, seed=seed
        )[0]
        low, high = boot["ci_low"], boot["ci_high"]
    return {
        "test": "wilcoxon",
        "estimate": r["estimate"],
        "ci_low": low,
        "ci_high": high,
        "p_value": r["p_value"],
        "effect_size": r["effect_size"],
        "n": r["n"],
        "n_differ": int(np.count_nonzero(va[ok] != vb[ok])),  # the pairs the signed-rank test uses (zero_method)
        "n_resamples": None,
        "ci_n_resamples": n_res if n_res > 0 else None,
    }
