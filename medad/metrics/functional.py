"""Functional metrics on numpy arrays or torch tensors: image scores (N,) + labels (N,), maps + masks (N,H,W).

All ranking metrics are exact: every distinct score is a threshold and tied scores are one threshold (equal to
scikit-learn to floating-point rounding). Pixel scores are compared at float32 precision (the precision of the
predictions store). Undefined metrics return :class:`~medad.metrics.NotApplicable` with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medad.errors import DataError
from medad.metrics._core import NotApplicable, as_numpy
from medad.metrics.accumulators import ImageMetrics, PixelMetrics, _as_maps, _as_masks


def _image(scores: Any, labels: Any) -> ImageMetrics:
    acc = ImageMetrics()
    acc.update(scores, labels)
    return acc


def _pixel(maps: Any, masks: Any, with_pro: bool, fpr_limit: float = 0.3, connectivity: int = 8) -> PixelMetrics:
    acc = PixelMetrics(fpr_limit=fpr_limit, connectivity=connectivity, with_pro=with_pro, memory_limit_bytes=1 << 62)
    acc.update(maps, masks)
    return acc


def image_auroc(scores: Any, labels: Any) -> float | NotApplicable:
    """Area under the ROC curve of image scores (ties count one half); N/A without both classes."""
    return _image(scores, labels).compute()["image_auroc"]


def image_ap(scores: Any, labels: Any) -> float | NotApplicable:
    """Average precision (scikit-learn's step-wise definition, no interpolation); N/A unless both classes occur."""
    return _image(scores, labels).compute()["image_ap"]


def image_f1_max(scores: Any, labels: Any) -> float | NotApplicable:
    """Best F1 over all thresholds (``score >= t`` is abnormal); N/A unless both classes occur."""
    return _image(scores, labels).compute()["image_f1_max"]


def pixel_auroc(maps: Any, masks: Any) -> float | NotApplicable:
    """Pooled pixel AUROC over all pixels of all maps; N/A without both normal and anomalous pixels."""
    return _pixel(maps, masks, with_pro=False).compute()["pixel_auroc"]


def pixel_ap(maps: Any, masks: Any) -> float | NotApplicable:
    """Pooled pixel average precision; N/A without anomalous pixels."""
    return _pixel(maps, masks, with_pro=False).compute()["pixel_ap"]


def pixel_f1_max(maps: Any, masks: Any) -> float | NotApplicable:
    """Pooled pixel best F1 over all thresholds; N/A without anomalous pixels."""
    return _pixel(maps, masks, with_pro=False).compute()["pixel_f1_max"]


def pixel_metrics(maps: Any, masks: Any, fpr_limit: float = 0.3, connectivity: int = 8) -> dict[str, Any]:
    """All pooled pixel metrics (AUROC, AP, F1-max and its threshold, AUPRO) from one sort of all pixels."""
    return _pixel(maps, masks, True, fpr_limit, connectivity).compute()


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3, connectivity: int = 8) -> float | NotApplicable:
    """Exact area under the per-region-overlap curve up to ``fpr_limit``, divided by ``fpr_limit``.

    Ground-truth components are connected components (8-connectivity by default, as MVTec AD) of every mask;
    PRO at threshold t is the mean over all components of all images of the fraction of the component with
    score >= t; FPR is over all normal pixels of all images. The curve runs from (0, 0) through one point per
    distinct score, is interpolated linearly at exactly ``fpr_limit`` and integrated with the trapezoid rule.
    N/A without anomalous or without normal pixels.
    """
    return _pixel(maps, masks, True, fpr_limit, connectivity).compute()["aupro"]


def roc_curve(scores: Any, labels: Any) -> dict[str, list[float]]:
    """Exact image-level ROC points ``fpr``, ``tpr``, ``thresholds`` (from (0, 0), one point per distinct score)."""
    return _image(scores, labels).curves(None)["roc"]


def pr_curve(scores: Any, labels: Any) -> dict[str, list[float]]:
    """Exact image-level precision-recall points ``recall``, ``precision``, ``thresholds``."""
    return _image(scores, labels).curves(None)["pr"]


def pixel_curves(
    maps: Any, masks: Any, max_points: int = 512, fpr_limit: float = 0.3, connectivity: int = 8
) -> dict[str, dict[str, list[float]]]:
    """Pooled pixel ROC, PR and PRO curves for plotting, each downsampled to at most ``max_points`` points."""
    return _pixel(maps, masks, True, fpr_limit, connectivity).curves(max_points)


def dice_iou(maps: Any, masks: Any, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per-image Dice and IoU of ``map >= threshold`` against the mask.

    Returns:
        ``{"dice": (N,), "iou": (N,)}``; NaN (not applicable) where both the mask and the prediction are empty,
        0 where only one of them is empty.
    """
    maps, masks = _as_maps(maps), _as_masks(masks)
    if maps.shape != masks.shape:
        raise DataError(f"score maps {maps.shape} and masks {masks.shape} differ in shape")
    pred = maps >= np.float32(threshold)
    inter = np.logical_and(pred, masks).sum(axis=(1, 2)).astype(np.float64)
    sizes = pred.sum(axis=(1, 2)).astype(np.float64) + masks.sum(axis=(1, 2))
    union = sizes - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "dice": np.where(sizes > 0, 2 * inter / sizes, np.nan),
            "iou": np.where(union > 0, inter / union, np.nan),
        }


def mean_ignoring_na(values: Any) -> float | NotApplicable:
    """Mean of the applicable (non-NaN) values; N/A when none is applicable."""
    arr = as_numpy(values, np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else NotApplicable("no image with a defined value")
