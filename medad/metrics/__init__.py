"""Exact image- and pixel-level metrics (AUROC, AP, F1-max, AUPRO, Dice/IoU), streaming accumulators, aggregation.

Functions take numpy arrays or torch tensors; accumulators take predictions in chunks with bounded memory.
Undefined metrics are :class:`NotApplicable` with a reason, never 0. See ``docs/metrics.md``.
"""

from medad.metrics._core import IMPLEMENTATION_VERSION, CurveSweep, NotApplicable
from medad.metrics.accumulators import ImageMetrics, PixelMetrics, component_sizes
from medad.metrics.aggregate import MEAN, POOLED, mean_over_classes
from medad.metrics.functional import (
    aupro,
    dice_iou,
    image_ap,
    image_auroc,
    image_f1_max,
    mean_ignoring_na,
    pixel_ap,
    pixel_auroc,
    pixel_curves,
    pixel_f1_max,
    pixel_metrics,
    pr_curve,
    roc_curve,
)

__all__ = [
    "IMPLEMENTATION_VERSION",
    "MEAN",
    "POOLED",
    "CurveSweep",
    "ImageMetrics",
    "NotApplicable",
    "PixelMetrics",
    "aupro",
    "component_sizes",
    "dice_iou",
    "image_ap",
    "image_auroc",
    "image_f1_max",
    "mean_ignoring_na",
    "mean_over_classes",
    "pixel_ap",
    "pixel_auroc",
    "pixel_curves",
    "pixel_f1_max",
    "pixel_metrics",
    "pr_curve",
    "roc_curve",
]
