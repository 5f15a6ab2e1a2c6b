"""Shared machinery of the exact metrics: score keys, the not-applicable result and the curve sweep.

Every ranking metric in :mod:`medad.metrics` is a function of one sweep over the distinct scores in descending
order, carrying three counts per distinct score: normal (negative) pixels/images, anomalous (positive) ones, and
for AUPRO the summed per-component weights ``1 / |component|`` of the anomalous pixels at that score. Because
PRO at a threshold is the mean over ground-truth components of the fraction of the component at or above the
threshold, ``PRO(t) = sum(1/|C(p)| for anomalous pixels p with score >= t) / n_components``: no per-component
bookkeeping is needed, only that weight per distinct score.

:class:`CurveSweep` consumes those per-score counts in blocks (so the distinct scores never need to be in memory
at once) and is vectorised over a leading "replicate" axis so that the bootstrap evaluates thousands of
resampled curves with the same code as the exact point estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medad.errors import DataError

IMPLEMENTATION_VERSION = "medad.metrics/1"


@dataclass(frozen=True)
class NotApplicable:
    """An undefined metric (e.g. AUROC with one class) and why; never silently 0.

    Attributes:
        reason: human-readable reason the metric is undefined on this input.
    """

    reason: str

    def __float__(self) -> float:
        return float("nan")


def as_numpy(x: Any, dtype: Any | None = None) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or sequence) as a numpy array without copying when possible."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def float32_keys(values: np.ndarray) -> np.ndarray:
    """Map float32 scores to uint32 keys with the same order (``-0.0`` and ``0.0`` share one key).

    Raises:
        DataError: if a score is NaN.
    """
    x = np.asarray(values, dtype=np.float32) + np.float32(0.0)
    if np.isnan(x).any():
        raise DataError("a score map contains NaN; fix the model output (e.g. np.nan_to_num) before evaluating")
    bits = x.view(np.uint32)
    return np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))


def keys_to_float32(keys: np.ndarray) -> np.ndarray:
    """Invert :func:`float32_keys`."""
    keys = np.asarray(keys, dtype=np.uint32)
    bits = np.where(keys >> np.uint32(31), keys & np.uint32(0x7FFFFFFF), ~keys)
    return bits.view(np.float32)


class CurveSweep:
    """Exact ROC / PR / PRO sweep over distinct scores, fed in descending-score blocks, for R replicates at once.

    Args:
        n_pos: positives per replicate, shape (R,).
        n_neg: negatives per replicate, shape (R,).
        n_comp: ground-truth components per replicate (AUPRO), shape (R,), or None to skip PRO.
        fpr_limit: upper FPR limit of the AUPRO integral.
        record: keep curve points (replicate 0 only) for plotting; ``None`` keeps every point, an int K keeps
            only the points where ``floor(K * x)`` of FPR, TPR or PRO changes (at most ~3K points).
    """

    def __init__(
        self,
        n_pos: np.ndarray,
        n_neg: np.ndarray,
        n_comp: np.ndarray | None = None,
        fpr_limit: float = 0.3,
        record: bool | int | None = False,
    ) -> None:
        self.n_pos = np.asarray(n_pos, dtype=np.float64)
        self.n_neg = np.asarray(n_neg, dtype=np.float64)
        self.n_comp = None if n_comp is None else np.asarray(n_comp, dtype=np.float64)
        self.fpr_limit = float(fpr_limit)
        shape = self.n_pos.shape
        self.tp = np.zeros(shape)
        self.fp = np.zeros(shape)
        self.wsum = np.zeros(shape)
        self.auc_num = np.zeros(shape)
        self.ap_num = np.zeros(shape)
        self.f1_max = np.zeros(shape)
        self.f1_threshold = np.full(shape, np.inf)
        self.pro_area = np.zeros(shape)
        self._record = record is not False
        self._grid = None if record is None or record is True else int(record)
        self._points: list[np.ndarray] = []
        self._last_cell = np.full(3, -1.0)

    def consume(self, neg: np.ndarray, pos: np.ndarray, w: np.ndarray | None = None, values: np.ndarray | None = None):
        """Add a block of distinct scores, highest first.

        Args:
            neg: negatives per score, shape (R, G) (or (G,) for one replicate).
            pos: positives per score, same shape.
            w: summed ``1/|component|`` of the positives per score (needed when ``n_comp`` was given).
            values: the scores themselves, shape (G,), for thresholds in the recorded curves.
        """
        neg = np.atleast_2d(np.asarray(neg, dtype=np.float64))
        pos = np.atleast_2d(np.asarray(pos, dtype=np.float64))
        if neg.shape[1] == 0:
            return
        tp_before = self.tp[:, None]
        ctp = tp_before + np.cumsum(pos, axis=1)
        cfp = self.fp[:, None] + np.cumsum(neg, axis=1)
        self.auc_num += np.einsum("rg,rg->r", neg, ctp - 0.5 * pos)
        called = ctp + cfp
        precision = np.divide(ctp, called, out=np.zeros_like(ctp), where=called > 0)
        self.ap_num += np.einsum("rg,rg->r", pos, precision)
        f1 = 2.0 * ctp / np.maximum(self.n_pos[:, None] + called, 1e-300)
        best = np.argmax(f1, axis=1)
        best_f1 = f1[np.arange(f1.shape[0]), best]
        better = best_f1 > self.f1_max
        self.f1_max = np.where(better, best_f1, self.f1_max)
        if values is not None:
            self.f1_threshold = np.where(better, np.asarray(values, dtype=np.float64)[best], self.f1_threshold)
        cpro = None
        if self.n_comp is not None and w is not None:
            w = np.atleast_2d(np.asarray(w, dtype=np.float64))
            cw = self.wsum[:, None] + np.cumsum(w, axis=1)
            n_neg = np.maximum(self.n_neg, 1.0)[:, None]
            n_comp = np.maximum(self.n_comp, 1.0)[:, None]
            x = np.concatenate([self.fp[:, None], cfp], axis=1) / n_neg
            y = np.concatenate([self.wsum[:, None], cw], axis=1) / n_comp
            x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
            lim = self.fpr_limit
            dx = x1 - x0
            full = x1 <= lim
            partial = (x0 < lim) & ~full
            y_lim = y0 + (y1 - y0) * np.divide(lim - x0, dx, out=np.zeros_like(dx), where=dx > 0)
            area = np.where(full, dx * (y0 + y1) * 0.5, np.where(partial, (lim - x0) * (y0 + y_lim) * 0.5, 0.0))
            self.pro_area += area.sum(axis=1)
            self.wsum = cw[:, -1]
            cpro = y[0, 1:]
        if self._record:
            self._keep_points(ctp[0], cfp[0], precision[0], cpro, values)
        self.tp = ctp[:, -1]
        self.fp = cfp[:, -1]

    def _keep_points(self, ctp, cfp, precision, cpro, values) -> None:
        n_pos, n_neg = max(self.n_pos[0], 1.0), max(self.n_neg[0], 1.0)
        tpr, fpr = ctp / n_pos, cfp / n_neg
        pro = np.zeros_like(fpr) if cpro is None else cpro
        thr = np.full_like(fpr, np.nan) if values is None else np.asarray(values, dtype=np.float64)
        if self._grid is not None:
            keep = np.zeros(fpr.size, dtype=bool)
            keep[-1] = True
            last = []
            for k, series in enumerate((fpr, tpr, pro)):
                cells = np.floor(series * self._grid)
                keep[0] |= cells[0] != self._last_cell[k]
                keep[1:] |= cells[1:] != cells[:-1]
                last.append(cells[-1])
            self._last_cell = np.array(last)
            idx = np.flatnonzero(keep)
            fpr, tpr, precision, pro, thr = fpr[idx], tpr[idx], precision[idx], pro[idx], thr[idx]
        pts = np.stack([fpr, tpr, precision, pro, thr], axis=1)
        self._points.append(pts)

    def results(self) -> dict[str, np.ndarray]:
        """Per-replicate metrics (NaN where undefined): ``auroc``, ``ap``, ``f1_max``, ``f1_threshold``, ``aupro``."""
        both = (self.n_pos > 0) & (self.n_neg > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {
                "auroc": np.where(both, self.auc_num / (self.n_pos * self.n_neg), np.nan),
                "ap": np.where(self.n_pos > 0, self.ap_num / self.n_pos, np.nan),
                "f1_max": np.where(self.n_pos > 0, self.f1_max, np.nan),
                "f1_threshold": np.where(self.n_pos > 0, self.f1_threshold, np.nan),
            }
            if self.n_comp is not None:
                ok = (self.n_comp > 0) & (self.n_neg > 0)
                out["aupro"] = np.where(ok, self.pro_area / self.fpr_limit, np.nan)
        return out

    def curves(self, max_points: int | None = 512) -> dict[str, dict[str, list[float]]]:
        """Recorded ROC, PR and PRO curves of replicate 0, each downsampled to at most ``max_points`` points.

        ROC and PRO start at (0, 0); PR starts at recall 0, precision 1 (the scikit-learn convention).
        """
        pts = np.concatenate(self._points) if self._points else np.zeros((0, 5))
        if max_points is not None and len(pts) > max_points - 1:
            pick = np.unique(np.round(np.linspace(0, len(pts) - 1, max_points - 1)).astype(np.int64))
            pts = pts[pick]
        fpr, tpr, prec, pro, thr = (pts[:, k] for k in range(5))
        thresholds = [None if np.isnan(t) else float(t) for t in thr]
        start = [None, *thresholds]
        curves = {
            "roc": {"fpr": [0.0, *fpr.tolist()], "tpr": [0.0, *tpr.tolist()], "thresholds": start},
            "pr": {"recall": [0.0, *tpr.tolist()], "precision": [1.0, *prec.tolist()], "thresholds": start},
        }
        if self.n_comp is not None:
            curves["pro"] = {"fpr": [0.0, *fpr.tolist()], "pro": [0.0, *pro.tolist()], "thresholds": start}
        return curves


def group_sorted_keys(composed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group an ascending array of composed keys ``(score_key << 32) | component_size`` by score.

    Args:
        composed: sorted uint64 keys; the low 32 bits are the pixel's component size (0 for a normal pixel).

    Returns:
        ``(keys, neg, pos, w)`` in DESCENDING score order: distinct uint32 score keys, normal and anomalous pixel
        counts, and the summed ``1/|component|`` of the anomalous pixels, per distinct score.
    """
    words = np.ascontiguousarray(composed).view(np.uint32)
    little = np.little_endian
    hi, size = (words[1::2], words[0::2]) if little else (words[0::2], words[1::2])
    starts = np.flatnonzero(np.concatenate([[True], hi[1:] != hi[:-1]]))
    total = np.diff(np.append(starts, hi.size))
    anomalous = np.flatnonzero(size)
    group = np.searchsorted(starts, anomalous, side="right") - 1
    pos = np.bincount(group, minlength=starts.size)
    w = np.bincount(group, weights=1.0 / size[anomalous].astype(np.float64), minlength=starts.size)
    neg = total - pos
    return hi[starts][::-1], neg[::-1], pos[::-1], w[::-1]


def merge_groups(
    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge several :func:`group_sorted_keys` outputs into one, still in descending score order."""
    keys = np.concatenate([g[0] for g in groups])
    order = np.argsort(keys, kind="stable")[::-1]
    keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    neg, pos, w = (np.add.reduceat(np.concatenate([g[j] for g in groups])[order], starts) for j in (1, 2, 3))
    return keys[starts], neg, pos, w
