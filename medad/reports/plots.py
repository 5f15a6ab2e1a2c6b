"""Report figures drawn with matplotlib's Agg canvas (no pyplot state, no display) as deterministic PNG bytes.

Identical inputs give identical bytes: the style is fixed (matplotlib defaults, not the user's rcParams) and
the PNG ``Software`` metadata is a constant instead of the matplotlib version string.
"""

from __future__ import annotations

import contextlib
import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medad.reports.loader import Curve
from medad.utils.colors import GT_CONTOUR, HEATMAP_CMAP, PRED_CONTOUR
from medad.utils.marks import RANDOM_WEIGHTS_MARK

RESEARCH_NOTICE = "RESEARCH USE ONLY - not for diagnosis"
PNG_METADATA = {"Software": "medad report"}
_DPI = 100
_MAX_DISPLAY_SIDE = 256
_CURVE_TITLES = {
    "roc": ("ROC", "false positive rate", "true positive rate"),
    "pr": ("Precision-recall", "recall", "precision"),
    "pro": ("PRO", "false positive rate", "per-region overlap"),
}
#: Curve key -> (metric whose value is the curve's area, its short name in legends).
CURVE_METRICS = {
    "image/roc": ("image_auroc", "AUROC"),
    "image/pr": ("image_ap", "AP"),
    "pixel/roc": ("pixel_auroc", "AUROC"),
    "pixel/pr": ("pixel_ap", "AP"),
    "pixel/pro": ("aupro", "AUPRO"),
}

#: Per model and curve key: the area to print in the legend (a float) or why the metric is undefined (a str).
CurveAreas = Mapping[str, Mapping[str, float | str]]


def figure_png(fig: Figure) -> bytes:
    """Render ``fig`` with the Agg canvas and return PNG bytes with fixed metadata."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=PNG_METADATA)
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _fixed_style() -> contextlib.AbstractContextManager[None]:
    """Matplotlib's default style, whatever the user's rcParams, so figures do not depend on local settings."""
    return mpl.style.context("default")


def curves_figure(
    title: str,
    curves: Mapping[str, Mapping[str, Curve]],
    fpr_limit: float | None = None,
    areas: CurveAreas | None = None,
) -> bytes:
    """ROC, PR and PRO panels with a line per model; one row per level (image-level, pixel-level).

    Args:
        title: figure title (dataset and class).
        curves: model -> {key: Curve}, key ``<level>/<kind>`` or ``<kind>`` (see :mod:`medad.reports.loader`).
        fpr_limit: the AUPRO integration limit, drawn as a dashed line on PRO panels whose x-axis it bounds.
        areas: model -> {key: value or reason} from ``metrics.json``: values go into the legend (``AUROC 0.912``);
            a model whose metric is undefined gets no (flat, meaningless) line, and a panel where no model is
            defined says ``n/a: <reason>`` instead.
    """
    keys = {key for per_model in curves.values() for key in per_model}
    levels = [lvl for lvl in ("image", "pixel", "") if any(k.rpartition("/")[0] == lvl for k in keys)]
    grid = [[k for k in ("roc", "pr", "pro") if (f"{lvl}/{k}" if lvl else k) in keys] for lvl in levels]
    n_cols = max((len(row) for row in grid), default=1)
    with _fixed_style():
        fig = _new_figure(4.0 * n_cols, 3.6 * max(len(levels), 1))
        axes = fig.subplots(max(len(levels), 1), n_cols, squeeze=False)
        for r, (level, kinds) in enumerate(zip(levels, grid, strict=True)):
            for c in range(n_cols):
                ax = axes[r][c]
                if c >= len(kinds):
                    ax.set_axis_off()
                    continue
                kind = kinds[c]
                key = f"{level}/{kind}" if level else kind
                panel = {model: per_model.get(key) for model, per_model in curves.items()}
                drawn = _draw_curves(ax, kind, level, panel, {m: (areas or {}).get(m, {}).get(key) for m in panel})
                if kind == "pro" and fpr_limit and drawn:
                    ax.axvline(fpr_limit, color="0.4", lw=0.8, ls="--", label=f"FPR limit {fpr_limit:g}")
                    ax.set_xlim(0, min(1.0, 1.5 * fpr_limit))
                    ax.legend(fontsize="small", loc="lower right")
        fig.suptitle(title)
        return figure_png(fig)


def not_applicable_panel(ax: Axes, title: str, reason: str) -> None:
    """Replace a panel that would be empty or flat by its title and ``n/a: <reason>``."""
    ax.set_title(title)
    ax.text(0.5, 0.5, f"n/a: {reason}", ha="center", va="center", wrap=True, transform=ax.transAxes, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.8")


def _draw_curves(
    ax: Axes, kind: str, level: str, per_model: Mapping[str, Curve | None], areas: Mapping[str, float | str | None]
) -> bool:
    """Draw one panel; return False when it shows ``n/a`` (no model has a defined curve)."""
    name, xlabel, ylabel = _CURVE_TITLES[kind]
    short = CURVE_METRICS.get(f"{level}/{kind}", ("", name))[1]
    title = f"{level}-level {name}" if level else name
    reasons = []
    lines = 0
    for model in sorted(per_model):
        curve, area = per_model[model], areas.get(model)
        if isinstance(area, str):
            reasons.append(area)
            continue
        if curve is None:
            continue
        value = area if area is not None else curve.area
        ax.plot(curve.x, curve.y, lw=1.5, label=model if value is None else f"{model} ({short} {value:.3f})")
        lines += 1
    if not lines:
        not_applicable_panel(ax, title, "; ".join(dict.fromkeys(reasons)) or "no curve recorded")
        return False
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="chance")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if reasons:
        ax.text(0.02, 0.02, f"not shown: n/a ({'; '.join(dict.fromkeys(reasons))})", fontsize="x-small",
                transform=ax.transAxes, color="0.3")  # fmt: skip
    ax.legend(fontsize="small", loc="lower left" if kind == "pr" else "lower right")
    return True


def histogram_figure(title: str, per_image: pd.DataFrame) -> bytes:
    """Normal vs abnormal image-score histograms, one panel per model, on one x-range and bin grid for all panels
    (so panels side by side compare); a model without scores gets an ``n/a`` panel.

    Args:
        title: figure title (the dataset).
        per_image: rows of one dataset with ``model``, ``label`` and ``image_score``.
    """
    models = sorted(per_image["model"].unique())
    every = per_image["image_score"].dropna().to_numpy(dtype=np.float64)
    lo, hi = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
    with _fixed_style():
        fig = _new_figure(4.2 * max(len(models), 1), 3.4)
        axes = fig.subplots(1, max(len(models), 1), squeeze=False, sharex=True)[0]
        for ax, model in zip(axes, models, strict=False):
            part = per_image[(per_image["model"] == model) & per_image["image_score"].notna()]
            scores = part["image_score"].to_numpy(dtype=np.float64)
            labels = part["label"]
            if not scores.size:
                not_applicable_panel(ax, model, "no image scores")
                continue
            for value, name, color in ((0, "normal", "#1f77b4"), (1, "abnormal", "#d62728")):
                chosen = scores[(labels == value).fillna(False).to_numpy()]
                ax.hist(chosen, bins=bins, alpha=0.55, color=color, label=f"{name} (n={chosen.size})")
            unknown = int(labels.isna().sum())
            ax.set(title=model if not unknown else f"{model} ({unknown} unlabelled not shown)")
            ax.set(xlabel="image score", ylabel="images", xlim=(bins[0], bins[-1]))
            ax.legend(fontsize="small")
        fig.suptitle(title)
        return figure_png(fig)


@dataclass
class CaseView:
    """One case to draw: its image, heatmap and ground-truth mask at native resolution, plus its caption."""

    caption: str
    image: np.ndarray
    heatmap: np.ndarray
    mask: np.ndarray | None


def _display_stride(shape: Sequence[int]) -> int:
    return max(1, int(np.ceil(max(shape[:2]) / _MAX_DISPLAY_SIDE)))


def _case_contours(ax: Axes, predicted: np.ndarray | None, truth: np.ndarray | None) -> None:
    """Draw the ground-truth (magenta) and predicted-mask (cyan) contours, as the export overlays do."""
    for mask, colour in ((truth, GT_CONTOUR), (predicted, PRED_CONTOUR)):
        if mask is not None and np.any(mask) and min(mask.shape[:2]) > 1:
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.2)


def _display_heatmap(case: CaseView, step: int) -> np.ndarray:
    """The case's heatmap at its image's size (nearest neighbour), subsampled by ``step`` like the image."""
    heatmap = np.asarray(case.heatmap, dtype=np.float32)
    if heatmap.shape[:2] != case.image.shape[:2]:
        rows = np.linspace(0, heatmap.shape[0] - 1, case.image.shape[0]).round().astype(int)
        cols = np.linspace(0, heatmap.shape[1] - 1, case.image.shape[1]).round().astype(int)
        heatmap = heatmap[np.ix_(rows, cols)]
    return heatmap[::step, ::step]


def cases_figure(
    title: str,
    cases: Sequence[CaseView],
    vmin: float = 0.0,
    vmax: float = 1.0,
    threshold: float | None = None,
    random_weights: bool = False,
) -> bytes:
    """A row per case: the image and the heatmap side by side, both with the predicted-mask and ground-truth
    contours - the rendering of the export overlays.

    The heatmap panel is opaque (nothing blended over it), in a perceptually uniform colormap on a fixed
    ``[vmin, vmax]`` range shared by all rows, so its colours are exactly the colour bar's and compare across
    cases; the threshold is marked on the colour bar. The predicted mask (``heatmap >= threshold``) is outlined
    in :data:`~medad.utils.colors.PRED_CONTOUR` (cyan), the ground truth in
    :data:`~medad.utils.colors.GT_CONTOUR` (magenta); a research-use notice is drawn on the figure, and with
    ``random_weights`` the :data:`~medad.utils.marks.RANDOM_WEIGHTS_MARK`.
    """
    with _fixed_style():
        fig = _new_figure(6.4, 2.9 * max(len(cases), 1) + 0.5)
        axes = fig.subplots(max(len(cases), 1), 2, squeeze=False)
        mappable = None
        for (ax_image, ax_heat), case in zip(axes, cases, strict=False):
            step = _display_stride(case.image.shape)
            image = np.clip(np.asarray(case.image, dtype=np.float32)[::step, ::step], 0.0, 1.0)
            heatmap = _display_heatmap(case, step)
            ax_image.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            mappable = ax_heat.imshow(heatmap, cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
            predicted = heatmap >= threshold if threshold is not None else None
            truth = np.asarray(case.mask, dtype=bool)[::step, ::step] if case.mask is not None else None
            for ax in (ax_image, ax_heat):
                _case_contours(ax, predicted, truth)
                ax.set_axis_off()
            ax_image.set_title(case.caption, fontsize="small", loc="left")
            ax_heat.set_title("anomaly map + contours", fontsize="small")
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=axes[:, 1].tolist(), shrink=0.8, label="pixel score")
            if threshold is not None and vmin <= threshold <= vmax:
                bar.ax.axhline(threshold, color=PRED_CONTOUR, linewidth=1.5)
        what = "predicted mask (cyan), ground truth (magenta)" if threshold is not None else "ground truth (magenta)"
        heading = textwrap.fill(title, 72)
        notice = f"{RANDOM_WEIGHTS_MARK} - {RESEARCH_NOTICE}" if random_weights else RESEARCH_NOTICE
        fig.suptitle(
            f"{heading}\ncontours: {what}\n{notice}", fontsize="medium", color="#b00020" if random_weights else None
        )
        return figure_png(fig)
