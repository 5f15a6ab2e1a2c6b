"""Few-shot results per shot count: the mean over reference draws, with an interval covering both the draw of the
references and the sampling of the images (``metrics.json`` ``fewshot`` rows, see docs/metrics.md).

The interval is a two-level bootstrap: each resample draws ``D`` reference draws with replacement from the ``D``
scored, and for each of them an independent image resample (stratified by label, by class for the class mean,
``group_id`` clusters where some cluster holds several images), and averages the ``D`` metric values. Its
percentiles are the interval. It covers which ``D`` draws of references happened to be taken and which images
happened to be tested; it does not cover another reference pool, nor the training seed of a trained model (one
row per model run). The 0-shot row is the plain run with the same image bootstrap (one "draw").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medad.evaluation.accumulation import Accumulated
from medad.evaluation.intervals import class_mean_statistic
from medad.evaluation.rows import ALL_METRICS
from medad.metrics import MEAN, POOLED, NotApplicable, mean_over_classes
from medad.stats.bootstrap import resample_weights

FEWSHOT_NOTE = (
    "value: mean over the reference draws of the metric; ci: two-level percentile bootstrap (resample the draws, "
    "then the images within each), covering the draw of the references and the sampling of the images, not "
    "another reference pool or the training seed"
)


@dataclass(frozen=True)
class FewShotRun:
    """One evaluated few-shot model run: its base model label (the 0-shot run), shot count and draw."""

    base: str
    shots: int
    draw: int


Statistic = Callable[[np.ndarray], np.ndarray]


def _scope(acc: Accumulated, label: str, dataset: str, class_name: str) -> tuple[np.ndarray, Statistic, np.ndarray]:
    """(rows, bootstrap statistic, exact values in ALL_METRICS order) of one model on one scope."""
    classes = acc.classes(dataset)
    scoped = classes if class_name in (MEAN, POOLED) else [class_name]
    rows = acc.rows_of(label, dataset, scoped)
    if class_name == MEAN:
        cls = acc.manifest["class_name"].astype(str).to_numpy()[rows]
        per_class = {c: acc.point(label, dataset, [c]) for c in classes}
        exact = {k: mean_over_classes({c: per_class[c][k] for c in classes}) for k in ALL_METRICS}
        statistic = class_mean_statistic(acc, label, dataset, rows, cls, classes)
    else:
        exact = acc.point(label, dataset, scoped)
        statistic = acc.statistic(label, dataset, rows)
    values = np.array([np.nan if isinstance(exact[k], NotApplicable) else float(exact[k]) for k in ALL_METRICS])
    return rows, statistic, values


def two_level_bootstrap(
    statistics: Sequence[Statistic],
    shifts: Sequence[np.ndarray],
    n: int,
    *,
    n_resamples: int,
    seed: int,
    groups: Sequence[Any] | None,
    strata: Sequence[Any] | None,
    batch: int = 250,
) -> np.ndarray:
    """Resampled means over draws, ``(n_resamples, M)``: per resample, ``D`` draws drawn with replacement, each with
    its own image resample (``statistics[d]`` maps image weights ``(R, n)`` to ``(R, M)``; ``shifts[d]`` moves it onto
    the exact value, as :func:`medad.stats.bootstrap_ci` does)."""
    rng = np.random.default_rng(seed)
    n_draws = len(statistics)
    reps = []
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        chosen = rng.integers(0, n_draws, size=(size, n_draws))
        total = None
        for slot in range(n_draws):
            weights = resample_weights(n, size, rng, groups, strata)
            values = np.stack([np.atleast_2d(f(weights)) + shift for f, shift in zip(statistics, shifts, strict=True)])
            picked = values[chosen[:, slot], np.arange(size)]
            total = picked if total is None else total + picked
        assert total is not None  # at least one draw
        reps.append(total / n_draws)
    return np.clip(np.concatenate(reps), 0.0, 1.0)  # every metric here is a fraction


def _interval(
    acc: Accumulated, labels: Sequence[str], dataset: str, class_name: str, ci: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Mean over the draws ``labels`` of every metric, its interval bounds (NaN without one) and the images."""
    scopes = [_scope(acc, label, dataset, class_name) for label in labels]
    rows = scopes[0][0]
    mean = np.mean([values for _, _, values in scopes], axis=0)
    low = high = np.full(mean.shape, np.nan)
    if int(ci["n_resamples"]) > 0 and rows.size:
        shifts = [values - np.atleast_2d(f(np.ones((1, rows.size))))[0] for _, f, values in scopes]
        groups = acc.groups_for(rows)
        strata = None
        if groups is None:
            strata = acc.labels[rows].astype(str)
            if class_name == MEAN:
                cls = acc.manifest["class_name"].astype(str).to_numpy()[rows]
                strata = np.char.add(np.char.add(cls, "|"), strata)
        reps = two_level_bootstrap(
            [f for _, f, _ in scopes],
            shifts,
            rows.size,
            n_resamples=int(ci["n_resamples"]),
            seed=int(ci["seed"]),
            groups=groups,
            strata=None if strata is None else strata.tolist(),
        )
        alpha = (1.0 - float(ci["level"])) / 2.0
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined in every resample: NaN bounds
            low, high = np.nanquantile(reps, [alpha, 1.0 - alpha], axis=0)
    return mean, low, high, int(rows.size)


def _shot_groups(acc: Accumulated, runs: Mapping[str, FewShotRun]) -> dict[tuple[str, int], list[str]]:
    """(base model, shots) -> its evaluated runs in draw order; shots 0 is the base model's plain run."""
    groups: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for label, run in runs.items():
        groups.setdefault((run.base, run.shots), []).append((run.draw, label))
        if run.base in acc.models:
            groups.setdefault((run.base, 0), [(0, run.base)])
    return {key: [label for _, label in sorted(items)] for key, items in sorted(groups.items())}


def fewshot_rows(
    acc: Accumulated, runs: Mapping[str, FewShotRun], metrics: Sequence[str], ci: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per base model, dataset, scope (each class, ``__mean__``, ``__pooled__``), shot count and metric: the mean
    over the draws and its two-level bootstrap interval (the module docstring says what it covers)."""
    out: list[dict[str, Any]] = []
    for (base, shots), labels in _shot_groups(acc, runs).items():
        for dataset in (d for d in acc.datasets if all(acc.covered(label, d) for label in labels)):
            scopes = [*acc.classes(dataset), MEAN, POOLED]
            for class_name in scopes:
                mean, low, high, n_images = _interval(acc, labels, dataset, class_name, ci)
                for metric in metrics:
                    k = ALL_METRICS.index(metric)
                    ok = bool(np.isfinite(mean[k]))
                    out.append(
                        {
                            "model": base,
                            "shots": shots,
                            "dataset": dataset,
                            "class_name": class_name,
                            "metric": metric,
                            "value": float(mean[k]) if ok else None,
                            "ci_low": float(low[k]) if ok and np.isfinite(low[k]) else None,
                            "ci_high": float(high[k]) if ok and np.isfinite(high[k]) else None,
                            "n_draws": len(labels),
                            "runs": list(labels),
                            "n_images": n_images,
                            "status": "ok" if ok else "not_applicable",
                        }
                    )
    return out
