"""The typed rows of an evaluation folder: what ``metrics.json``, ``per_image.csv`` and ``comparisons.json`` hold.

:func:`medad.evaluation.evaluate` builds every metrics row as a :class:`MetricRow` and writes its
:meth:`~MetricRow.to_dict`; readers (``medad.reports``) take their column lists from here rather than declaring
them again. The ``*_KEYS`` tuples are the keys every folder has held since the first release (a reader fills a
missing one with an empty value); keys added later (a row's ``aggregate``, ``random_weights`` and
``not_zero_shot``) are read only where present, so older folders still read as they were written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from medad.metrics import MEAN, POOLED

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")
SEG_METRICS = ("dice", "iou")
ALL_METRICS = IMAGE_METRICS + PIXEL_METRICS + SEG_METRICS
"""Every metric an evaluation computes, in the order of its rows and bootstrap statistics."""

Aggregate = Literal["class", "class_mean", "pooled", "volume"]

VOLUMES = "__volumes__"
"""``class_name`` of the volume-level rows (:mod:`medad.evaluation.volumes`): each volume of the dataset one case."""

#: ``aggregate`` of a metrics row by its ``class_name``: one class, the class mean (macro), all images (micro) or
#: all volumes (a DICOM series, a multi-frame object or a NIfTI file as one case).
AGGREGATES: dict[str, Aggregate] = {MEAN: "class_mean", POOLED: "pooled", VOLUMES: "volume"}
AGGREGATE_NOTES = {
    "class": "one class",
    "class_mean": f"{MEAN}: unweighted mean of the per-class values (macro average; what papers report per dataset)",
    "pooled": f"{POOLED}: every image and pixel of the dataset in one set (micro average)",
    "volume": f"{VOLUMES}: every volume of the dataset as one case, scored by settings.volumes.score; "
    "n_images counts volumes",
}


@dataclass(frozen=True)
class MetricRow:
    """One metric of one model on one (dataset, class) scope, as a row of ``metrics.json``.

    Attributes:
        model: the model's label in the evaluation.
        dataset: the dataset name.
        class_name: a class, ``__mean__`` (class mean) or ``__pooled__`` (all images of the dataset).
        metric: one of :data:`ALL_METRICS`.
        value: the exact estimate; ``None`` when not applicable.
        ci_low: lower bootstrap bound (``None`` without an interval).
        ci_high: upper bootstrap bound.
        n_images: images in the scope.
        aggregate: ``class``, ``class_mean`` or ``pooled`` (:data:`AGGREGATES`).
        status: ``ok`` or ``not_applicable``.
        reason: why not applicable (``None`` when ok).
        random_weights: whether the model's frozen weights were random (its numbers test the pipeline only).
        not_zero_shot: why the row is not zero-shot, when its model was trained on data that include the dataset
            and the study allowed it (``"not zero-shot (trained on CVC-ColonDB)"``); ``None`` for a zero-shot row.
    """

    model: str
    dataset: str
    class_name: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_images: int
    aggregate: Aggregate
    status: Literal["ok", "not_applicable"]
    reason: str | None
    random_weights: bool = False
    not_zero_shot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as written into ``metrics.json`` (keys in field order)."""
        return asdict(self)


METRIC_ROW_FIELDS = tuple(f.name for f in fields(MetricRow))
METRIC_ROW_KEYS = tuple(
    name for name in METRIC_ROW_FIELDS if name not in ("aggregate", "random_weights", "not_zero_shot")
)
"""The keys of a metrics row that every ``metrics.json`` holds."""

PER_IMAGE_KEYS = (
    "model",
    "dataset",
    "index",
    "case_id",
    "class_name",
    "label",
    "image_score",
    "max_pixel_score",
    "dice",
    "iou",
)
"""The columns of ``per_image.csv`` that every evaluation writes (then ``random_weights``, ``volume_id``,
``slice_order``)."""

PER_IMAGE_COLUMNS = (*PER_IMAGE_KEYS, "random_weights", "volume_id", "slice_order")
"""The columns of ``per_image.csv``, in order (``volume_id`` empty and ``slice_order`` empty for a plain image)."""

COMPARISON_KEYS = (
    "dataset",
    "class_name",
    "metric",
    "model_a",
    "model_b",
    "test",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "correction",
    "effect_size",
    "n",
)
"""The keys of a ``comparisons.json`` row shared by every test (a test may add its resampling counts)."""


def round_sig(x: Any, digits: int = 10) -> Any:
    """Round floats (recursively in lists/dicts) to ``digits`` significant digits; NaN/inf become None."""
    if isinstance(x, dict):
        return {k: round_sig(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [round_sig(v, digits) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.{digits}g}") if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
