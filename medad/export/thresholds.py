"""Thresholds that turn soft anomaly maps into binary masks.

Every export records the :class:`Threshold` it used (rule, value and how the value was found), so a mask can
always be traced back to the rule that made it. Masks are ``map >= value``; every model's maps lie in
:data:`SCORE_RANGE`, so a fixed threshold outside ``(0, 1]`` (all pixels or none) is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medad.errors import ExportError

SCORE_RANGE = (0.0, 1.0)
"""Every model's anomaly maps lie in ``[0, 1]`` (docs/architecture.md)."""


@dataclass(frozen=True)
class Threshold:
    """A threshold on anomaly scores and where it came from.

    Attributes:
        rule: ``fixed``, ``percentile``, ``f1`` or ``youden``.
        value: the score at or above which a pixel is called anomalous.
        details: JSON-serialisable facts about how ``value`` was chosen (percentile, number of normal maps,
            level ``pixel``/``image``, the criterion reached, ...).
    """

    rule: str
    value: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the threshold."""
        return asdict(self)

    def describe(self) -> str:
        """Return a short human-readable description, e.g. ``0.5 (fixed)`` or ``0.4213 (f1, in-sample)``."""
        return f"{self.value:.4g} ({self.rule}{', in-sample' if self.details.get('in_sample') else ''})"


def score_text(score: float, threshold: float, decimals: int = 4) -> str:
    """A score printed with ``decimals`` decimals, or more (up to 9) when fewer would print it equal to a
    ``threshold`` it is not equal to: 0.49999985 at threshold 0.5 shows ``0.49999985``, not ``0.5000``."""
    places = decimals
    while places < 9 and score != threshold and f"{score:.{places}f}" == f"{threshold:.{places}f}":
        places += 1
    return f"{score:.{places}f}"


def fixed_threshold(value: float) -> Threshold:
    """Return a fixed threshold.

    Args:
        value: the score at or above which a pixel is anomalous; must be finite.

    Raises:
        ExportError: if ``value`` is not a finite number.
    """
    if not np.isfinite(value):
        raise ExportError(f"fixed threshold {value!r} is not a finite number; pass e.g. --threshold fixed:0.5")
    if not SCORE_RANGE[0] < value <= SCORE_RANGE[1]:
        effect = "every pixel of every image" if value <= SCORE_RANGE[0] else "no pixel at all"
        raise ExportError(
            f"fixed threshold {value:g} is outside the anomaly-score range (0, 1]: masks `map >= {value:g}` would "
            f"mark {effect}; pass a value in (0, 1], e.g. --threshold fixed:0.5"
        )
    return Threshold("fixed", float(value), {})


THRESHOLD_RULES = ("fixed", "percentile", "f1", "youden")
SPEC_FORMS = "fixed:VALUE, percentile:P:NORMALS_PRED_DIR, f1[:VAL_PRED_DIR] or youden[:VAL_PRED_DIR]"


def check_threshold_spec(spec: str) -> tuple[str, str]:
    """Check a threshold spec's syntax and values without reading any predictions folder.

    What :func:`medad.export.resolve_threshold` would refuse only after scoring (a rule that does not exist,
    ``fixed:abc``, ``fixed:-1``, ``percentile:150:DIR``, a percentile without its normals folder) is refused
    here, so ``medad validate``, ``medad run`` and ``medad score --export`` can check it before any work.

    Args:
        spec: ``fixed:0.5``, ``percentile:99:DIR``, ``f1``, ``f1:DIR``, ``youden`` or ``youden:DIR``.

    Returns:
        ``(rule, rest)``: the lower-case rule and what follows its first colon (a folder still to be read for
        ``percentile`` / ``f1`` / ``youden``).

    Raises:
        ExportError: naming the spec and the forms it may take.
    """
    rule, _, rest = str(spec).strip().partition(":")
    rule = rule.lower()
    if rule not in THRESHOLD_RULES:
        raise ExportError(f"unknown threshold {spec!r}; use {SPEC_FORMS}")
    if rule == "fixed":
        try:
            value = float(rest)
        except ValueError:
            raise ExportError(f"threshold {spec!r}: {rest!r} is not a number; use e.g. fixed:0.5") from None
        fixed_threshold(value)
    elif rule == "percentile":
        value_text, _, folder = rest.partition(":")
        try:
            percentile = float(value_text)
        except ValueError:
            raise ExportError(
                f"threshold {spec!r}: {value_text!r} is not a percentile; use e.g. percentile:99:DIR"
            ) from None
        if not 0.0 < percentile <= 100.0:
            raise ExportError(
                f"threshold {spec!r}: percentile {percentile:g} must be in (0, 100]; use e.g. percentile:99:DIR"
            )
        if not folder:
            raise ExportError(f"threshold {spec!r} names no normals folder; use percentile:P:NORMALS_PRED_DIR")
    return rule, rest


def percentile_threshold(normal_maps: Iterable[np.ndarray], percentile: float) -> Threshold:
    """Return the given percentile of all pixel scores on maps of normal reference images.

    Args:
        normal_maps: anomaly maps of images known to be normal.
        percentile: in ``(0, 100]``; e.g. 99 calls the top 1% of normal pixels anomalous.

    Raises:
        ExportError: if the percentile is out of range or there are no normal maps.
    """
    if not 0.0 < percentile <= 100.0:
        raise ExportError(f"percentile {percentile} must be in (0, 100]; pass e.g. --threshold percentile:99:DIR")
    flat = [np.asarray(m, dtype=np.float32).ravel() for m in normal_maps]
    if not flat:
        raise ExportError(
            "no normal reference maps were given for the percentile threshold; score a folder of "
            "normal images first and pass its predictions folder"
        )
    scores = np.concatenate(flat)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ExportError("the normal reference maps hold no finite scores; re-score the normal images")
    value = float(np.percentile(scores, percentile))
    return Threshold(
        "percentile",
        value,
        {"percentile": float(percentile), "n_maps": len(flat), "n_pixels": int(scores.size), "level": "pixel"},
    )


def _best_cut(scores: np.ndarray, labels: np.ndarray, criterion: str) -> tuple[float, float]:
    """Return ``(threshold, criterion value)`` maximising F1 or Youden's J over all cuts ``score >= t``."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y, dtype=np.float64)
    fp = np.cumsum(~y, dtype=np.float64)
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp, cuts = tp[last], fp[last], s[last]
    pos, neg = float(y.sum()), float((~y).sum())
    values = 2 * tp / (tp + fp + pos) if criterion == "f1" else tp / pos - fp / neg
    best = int(np.argmax(values))
    return float(cuts[best]), float(values[best])


def optimal_threshold(
    scores: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[np.ndarray], criterion: str
) -> Threshold:
    """Return the F1- or Youden-optimal threshold on a labelled validation set.

    Args:
        scores: either a 1-D array of image scores, or a sequence of anomaly maps.
        labels: either a 1-D array of image labels (0/1), or a sequence of boolean masks matching the maps.
        criterion: ``f1`` or ``youden``.

    Raises:
        ExportError: for an unknown criterion, mismatched inputs, or a validation set lacking either class.
    """
    if criterion not in ("f1", "youden"):
        raise ExportError(f"unknown threshold criterion {criterion!r}; use f1 or youden")
    if isinstance(scores, np.ndarray) and scores.ndim == 1:
        level = "image"
        s = scores.astype(np.float64)
        y = np.asarray(labels).astype(bool)
        if s.shape != y.shape:
            raise ExportError(f"{s.size} image scores but {y.size} labels; give one label per image")
    else:
        level = "pixel"
        maps, masks = list(scores), list(labels)
        if len(maps) != len(masks):
            raise ExportError(f"{len(maps)} validation maps but {len(masks)} masks; give one mask per map")
        for k, (m, g) in enumerate(zip(maps, masks, strict=True)):
            if np.shape(m) != np.shape(g):
                raise ExportError(
                    f"validation map {k} is {np.shape(m)} but its mask is {np.shape(g)}; "
                    "give masks at the map's (native) size"
                )
        if not maps:
            raise ExportError("the validation set is empty; give labelled validation predictions")
        s = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps])
        y = np.concatenate([np.asarray(g).astype(bool).ravel() for g in masks])
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if not y.any() or y.all():
        raise ExportError(
            f"the validation set has only one class at {level} level; {criterion} needs both "
            "normal and abnormal examples"
        )
    value, reached = _best_cut(s, y, criterion)
    return Threshold(
        criterion, value, {"level": level, criterion: reached, "n": int(s.size), "n_positive": int(y.sum())}
    )
