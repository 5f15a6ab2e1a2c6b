"""Seeded bootstrap confidence intervals that resample whole images (or ``group_id`` clusters).

A resample is represented by a vector of image multiplicities (how often each image was drawn), so a statistic
is a function of a weight matrix ``(R, n_images)``. Statistics that are sums over images (histograms, counts,
means) then cost one matrix product per batch of resamples instead of a recomputation per resample:

* pooled **pixel** metrics: every image is summarised once by its per-score histograms of normal pixels,
  anomalous pixels and ``1/|component|`` weights on one shared grid of score bins (:class:`PixelHistograms`);
  a resample's pooled histogram is ``weights @ per_image_histograms`` and the metrics come from one vectorised
  :class:`~medad.metrics.CurveSweep`. The grid bins float32 scores by their 16 high key bits (sign, exponent,
  7 mantissa bits; relative width <= 1/128), merged into at most ``max_bins`` equal-mass bins. Binning only
  affects the resampled values, not the exact point estimate; the bootstrap distribution is shifted by
  ``exact - binned`` full-sample value so the interval is centred on the exact estimate (grid bias correction).
* **image-level** metrics use the exact grid of distinct image scores, so each resample is exact.
* means of per-image values (Dice, IoU) are weighted means.

Intervals are percentile or BCa (bias-corrected and accelerated, with leave-one-unit-out jackknife
acceleration). Resamples where the statistic is undefined (e.g. no abnormal image drawn) are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from medad.errors import ConfigError, DataError
from medad.metrics import CurveSweep
from medad.metrics._core import float32_keys
from medad.stats.defaults import CI_LEVEL, CI_METHOD, CI_RESAMPLES, CI_SEED, check_ci_settings, resampling_p_value

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BootstrapResult:
    """A bootstrap interval and the settings that produced it.

    Attributes:
        estimate: the full-sample value.
        ci_low: lower bound (NaN when no resample was defined).
        ci_high: upper bound.
        method: ``bca`` or ``percentile`` as requested.
        method_used: the method actually applied (BCa falls back to percentile when degenerate).
        level: confidence level.
        n_resamples: resamples drawn.
        n_valid: resamples where the statistic was defined.
        unit: ``image`` or ``group_id``.
        stratified_by: what resampling was stratified by (``None``, ``label``, ``class_name``, ...).
        seed: the seed.
    """

    estimate: float
    ci_low: float
    ci_high: float
    method: str
    method_used: str
    level: float
    n_resamples: int
    n_valid: int
    unit: str
    stratified_by: str | None
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        return asdict(self)


def _codes(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(values).astype(str), return_inverse=True)[1].ravel()


def resample_weights(
    n: int,
    n_resamples: int,
    rng: np.random.Generator,
    groups: Sequence[Any] | None = None,
    strata: Sequence[Any] | None = None,
) -> np.ndarray:
    """Draw bootstrap multiplicities ``(n_resamples, n)`` of whole units (images, or clusters given by ``groups``).

    Args:
        n: number of images.
        n_resamples: resamples to draw.
        rng: numpy generator.
        groups: cluster id per image; clusters are drawn whole.
        strata: stratum per image; units are drawn within their stratum (a unit's stratum is that of its
            first image), keeping every stratum's unit count fixed.
    """
    unit = _codes(groups) if groups is not None else np.arange(n)
    n_units = int(unit.max()) + 1 if n else 0
    first = np.zeros(n_units, dtype=np.int64)
    first[unit[::-1]] = np.arange(n)[::-1]
    unit_stratum = _codes(strata)[first] if strata is not None else np.zeros(n_units, dtype=np.int64)
    unit_w = np.zeros((n_resamples, n_units))
    for s in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == s)
        k = members.size
        draws = rng.integers(0, k, size=(n_resamples, k)) + (np.arange(n_resamples) * k)[:, None]
        unit_w[:, members] = np.bincount(draws.ravel(), minlength=n_resamples * k).reshape(n_resamples, k)
    return unit_w[:, unit]


def jackknife_weights(n: int, groups: Sequence[Any] | None = None) -> np.ndarray:
    """Leave-one-unit-out weights ``(n_units, n)``."""
    unit = _codes(groups) if groups is not None else np.arange(n)
    n_units = int(unit.max()) + 1 if n else 0
    return (unit[None, :] != np.arange(n_units)[:, None]).astype(np.float64)


def _interval(rep: np.ndarray, est: float, jack: np.ndarray, method: str, level: float) -> tuple[float, float, str]:
    rep = rep[np.isfinite(rep)]
    if rep.size == 0 or not np.isfinite(est):
        return float("nan"), float("nan"), method
    alpha = (1.0 - level) / 2.0
    probs = np.array([alpha, 1.0 - alpha])
    used = "percentile"
    if method == "bca":
        frac = (np.sum(rep < est) + 0.5 * np.sum(rep == est)) / rep.size
        jack = jack[np.isfinite(jack)]
        d = jack.mean() - jack if jack.size else np.zeros(1)
        denom = 6.0 * np.sum(d**2) ** 1.5
        accel = float(np.sum(d**3) / denom) if denom > 0 else 0.0
        if 0.0 < frac < 1.0:
            z0 = norm.ppf(frac)
            z = norm.ppf(probs)
            probs = norm.cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
            used = "bca"
    low, high = np.quantile(rep, probs)
    return float(low), float(high), used


def bootstrap_ci(
    statistic: Statistic,
    n: int,
    *,
    n_resamples: int = CI_RESAMPLES,
    seed: int = CI_SEED,
    groups: Sequence[Any] | None = None,
    strata: Sequence[Any] | None = None,
    stratified_by: str | None = None,
    method: str = CI_METHOD,
    level: float = CI_LEVEL,
    estimate: np.ndarray | None = None,
    bounds: tuple[float, float] | None = None,
    batch: int = 250,
) -> list[BootstrapResult]:
    """Bootstrap intervals for the M outputs of a weighted statistic.

    Args:
        statistic: maps image weights ``(R, n)`` to values ``(R, M)`` (NaN where undefined).
        n: number of images.
        n_resamples: resamples (>= 2000 recommended for reported intervals).
        seed: seed of ``numpy.random.default_rng``.
        groups: cluster id per image (resample clusters), or None (resample images).
        strata: stratum per image, or None.
        stratified_by: name of the stratification, recorded in the result.
        method: ``bca`` or ``percentile``.
        level: confidence level.
        estimate: exact full-sample values (M,) when ``statistic`` is an approximation (binned grid); the
            replicates are shifted by ``estimate - statistic(ones)``.
        bounds: the range the statistic cannot leave (e.g. ``(0, 1)`` for AUROC, AP, Dice); shifted replicates
            are clipped to it, so an interval never claims an impossible value such as a negative AUPRO.
        batch: resamples evaluated per call of ``statistic`` (bounds memory).

    Returns:
        One :class:`BootstrapResult` per output of ``statistic``.
    """
    check_ci_settings(n_resamples, level, method)
    if n_resamples < 1:
        raise ConfigError(f"need n_resamples >= 1 to bootstrap, got {n_resamples}")
    if n == 0:
        raise DataError("cannot bootstrap an empty set of images")
    full = np.atleast_2d(statistic(np.ones((1, n))))[0]
    shift = np.zeros_like(full) if estimate is None else np.asarray(estimate, dtype=np.float64) - full
    est = full + shift
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_resamples, batch):
        w = resample_weights(n, min(batch, n_resamples - start), rng, groups, strata)
        reps.append(np.atleast_2d(statistic(w)))
    rep = np.concatenate(reps) + shift
    if bounds is not None:
        rep = np.clip(rep, *bounds)
    if method == "bca":
        jw = jackknife_weights(n, groups)
        jack = np.concatenate([np.atleast_2d(statistic(jw[s : s + batch])) for s in range(0, len(jw), batch)])
    else:
        jack = np.zeros((0, full.size))
    out = []
    for m in range(full.size):
        low, high, used = _interval(rep[:, m], float(est[m]), jack[:, m] if jack.size else jack, method, level)
        out.append(
            BootstrapResult(
                estimate=float(est[m]),
                ci_low=low,
                ci_high=high,
                method=method,
                method_used=used,
                level=level,
                n_resamples=n_resamples,
                n_valid=int(np.isfinite(rep[:, m]).sum()),
                unit="group_id" if groups is not None else "image",
                stratified_by=stratified_by,
                seed=seed,
            )
        )
    return out


def mean_statistic(values: np.ndarray) -> Statistic:
    """Weighted mean of per-image values, ignoring NaN (undefined) values."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    filled = np.where(ok, values, 0.0)

    def stat(w: np.ndarray) -> np.ndarray:
        den = w @ ok.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (w @ filled) / den, np.nan)[:, None]

    return stat


def image_statistic(scores: np.ndarray, labels: np.ndarray) -> Statistic:
    """Exact weighted image AUROC, AP and F1-max (outputs in that order) on the grid of distinct scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    values, inverse = np.unique(scores, return_inverse=True)
    onehot = np.zeros((scores.size, values.size))
    onehot[np.arange(scores.size), inverse.ravel()] = 1.0
    pos_m = (onehot * labels[:, None])[:, ::-1]
    neg_m = (onehot * ~labels[:, None])[:, ::-1]

    def stat(w: np.ndarray) -> np.ndarray:
        pos, neg = w @ pos_m, w @ neg_m
        sweep = CurveSweep(pos.sum(axis=1), neg.sum(axis=1))
        sweep.consume(neg, pos)
        res = sweep.results()
        return np.stack([res["auroc"], res["ap"], res["f1_max"]], axis=1)

    return stat


class PixelHistograms:
    """Per-image pixel histograms on a shared score grid, for bootstrapping pooled pixel metrics cheaply.

    ``update`` takes the same chunks as :class:`~medad.metrics.PixelMetrics` and keeps, per image, sparse counts
    of normal pixels, anomalous pixels and summed ``1/|component|`` per 16-bit key bin, plus its component count.
    """

    def __init__(self) -> None:
        self._bins: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._w: list[np.ndarray] = []
        self.n_comp: list[int] = []

    def update(self, maps: Sequence[np.ndarray], sizes: Sequence[np.ndarray], n_comp: Sequence[int]) -> None:
        """Add maps ((N,H,W) or a list of (H,W)) with their :func:`~medad.metrics.component_sizes` output."""
        for m, s, c in zip(maps, sizes, n_comp, strict=True):
            m = np.asarray(m, dtype=np.float32)
            bins = (float32_keys(m).ravel() >> np.uint32(16)).astype(np.int64)
            s = s.ravel().astype(np.float64)
            ub, inv = np.unique(bins, return_inverse=True)
            pos = np.bincount(inv, weights=(s > 0), minlength=ub.size)
            w = np.bincount(inv, weights=np.divide(1.0, s, out=np.zeros_like(s), where=s > 0), minlength=ub.size)
            self._bins.append(ub)
            self._neg.append(np.bincount(inv, minlength=ub.size) - pos)
            self._pos.append(pos)
            self._w.append(w)
            self.n_comp.append(int(c))

    def statistic(self, rows: np.ndarray, fpr_limit: float = 0.3, max_bins: int = 2048) -> Statistic:
        """Weighted pooled pixel AUROC, AP, F1-max and AUPRO (outputs in that order) over the images ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        grid = np.unique(np.concatenate([self._bins[r] for r in rows])) if rows.size else np.zeros(0, np.int64)
        mats = np.zeros((3, rows.size, grid.size))
        for k, r in enumerate(rows):
            cols = np.searchsorted(grid, self._bins[r])
            mats[0, k, cols], mats[1, k, cols], mats[2, k, cols] = self._neg[r], self._pos[r], self._w[r]
        if grid.size > max_bins:
            mass = np.cumsum(mats[0].sum(axis=0) + mats[1].sum(axis=0))
            group = np.minimum(np.floor((mass - 1) * max_bins / max(mass[-1], 1)), max_bins - 1)
            last = np.flatnonzero(np.append(group[1:] != group[:-1], True))
            ends = np.cumsum(mats, axis=2)[:, :, last]
            mats = np.diff(ends, axis=2, prepend=0.0)
        mats = mats[:, :, ::-1].copy()
        n_comp = np.asarray(self.n_comp, dtype=np.float64)[rows]

        def stat(w: np.ndarray) -> np.ndarray:
            neg, pos, cw = w @ mats[0], w @ mats[1], w @ mats[2]
            sweep = CurveSweep(pos.sum(axis=1), neg.sum(axis=1), w @ n_comp, fpr_limit)
            sweep.consume(neg, pos, cw)
            res = sweep.results()
            return np.stack([res["auroc"], res["ap"], res["f1_max"], res["aupro"]], axis=1)

        return stat


def paired_bootstrap_test(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    *,
    estimate: np.ndarray | None = None,
    n_resamples: int = CI_RESAMPLES,
    seed: int = CI_SEED,
    groups: Sequence[Any] | None = None,
    strata: Sequence[Any] | None = None,
    level: float = CI_LEVEL,
    batch: int = 250,
) -> list[dict[str, Any]]:
    """Paired bootstrap of the difference a - b: the same resampled images for both models.

    The interval is the percentile interval of the resampled differences. The two-sided p-value is
    ``min(1, 2 * min(#(diff <= 0) + 1, #(diff >= 0) + 1) / (B + 1))`` over the B resamples where both are
    defined (:func:`~medad.stats.defaults.resampling_p_value`), so it is never below ``1 / (B + 1)``.

    Args:
        statistic_a: weighted statistic of model a (see :func:`bootstrap_ci`), outputs (R, M).
        statistic_b: the same for model b.
        n: number of images.
        estimate: exact full-sample differences (M,), to shift binned replicates (grid bias correction).
        n_resamples: resamples.
        seed: seed.
        groups: cluster id per image, or None.
        strata: stratum per image, or None.
        level: confidence level.
        batch: resamples per statistic call.

    Returns:
        One dict per output: ``estimate``, ``ci_low``, ``ci_high``, ``p_value``, ``n_valid`` and ``settings``.
    """
    check_ci_settings(n_resamples, level)
    if n_resamples < 1:
        raise ConfigError(f"need n_resamples >= 1 for a paired bootstrap test, got {n_resamples}")
    ones = np.ones((1, n))
    full = np.atleast_2d(statistic_a(ones))[0] - np.atleast_2d(statistic_b(ones))[0]
    shift = np.zeros_like(full) if estimate is None else np.asarray(estimate, dtype=np.float64) - full
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_resamples, batch):
        w = resample_weights(n, min(batch, n_resamples - start), rng, groups, strata)
        reps.append(np.atleast_2d(statistic_a(w)) - np.atleast_2d(statistic_b(w)))
    rep = np.concatenate(reps) + shift
    alpha = (1.0 - level) / 2.0
    out = []
    for m in range(full.size):
        r = rep[:, m][np.isfinite(rep[:, m])]
        est = float(full[m] + shift[m])
        if r.size and np.isfinite(est):
            low, high = (float(v) for v in np.quantile(r, [alpha, 1.0 - alpha]))
            tail = min(int(np.sum(r <= 0)), int(np.sum(r >= 0)))
            p = float(min(1.0, 2.0 * resampling_p_value(tail, r.size)))
        else:
            low = high = p = float("nan")
        out.append(
            {
                "estimate": est,
                "ci_low": low,
                "ci_high": high,
                "p_value": p,
                "n_valid": int(r.size),
                "settings": {
                    "test": "paired_bootstrap",
                    "n_resamples": n_resamples,
                    "seed": seed,
                    "level": level,
                    "unit": "group_id" if groups is not None else "image",
                    "interval": "percentile",
                    "p_value": "(count + 1) / (B + 1), two-sided",
                },
            }
        )
    return out
