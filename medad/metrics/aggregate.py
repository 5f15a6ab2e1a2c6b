"""Aggregation over classes: the field's unweighted mean over classes (``__mean__``)."""

from __future__ import annotations

from collections.abc import Mapping

from medad.metrics._core import NotApplicable

MEAN = "__mean__"
POOLED = "__pooled__"


def mean_over_classes(values: Mapping[str, float | NotApplicable]) -> float | NotApplicable:
    """Unweighted mean of a metric over classes, as reported in the field (each class counts once).

    The mean is only defined when the metric is defined for every class: a mean over a subset would not be
    comparable with published numbers, so any not-applicable class makes the mean not applicable.

    Args:
        values: metric value (or NotApplicable) per class name.
    """
    if not values:
        return NotApplicable("no classes")
    missing = sorted(name for name, value in values.items() if isinstance(value, NotApplicable))
    if missing:
        return NotApplicable(f"not applicable for class(es) {', '.join(missing)}")
    return float(sum(float(v) for v in values.values()) / len(values))
