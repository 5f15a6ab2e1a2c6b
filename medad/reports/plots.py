"""Report figures drawn with matplotlib's Agg canvas (no pyplot state, no display) as deterministic PNG bytes.

Identical inputs give identical bytes: the style is fixed (matplotlib defaults, not the user's rcParams) and
the PNG ``Software`` metadata is a constant instead of the matplotlib version string.
"""

from __future__ import annotations

import contextlib
import io
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

HEATMAP_CMAP = "inferno"
CONTOUR_COLOR = "#00e5ff"
RESEARCH_NOTICE = "RESEARCH USE ONLY - not for diagnosis"
PNG_METADATA = {"Software": "medad report"}
_DPI = 100
_MAX_DISPLAY_SIDE = 256
_CURVE_TITLES = {
    "roc": ("ROC", "false positive rate", "true positive rate"),
    "pr": ("Precision-recall", "recall", "precision"),
    "pro": ("PRO", "false positive rate", "per-region overlap"),
}


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


def curves_figure(title: str, curves: Mapping[str, Mapping[str, Curve]], fpr_limit: float | None = None) -> bytes:
    """ROC, PR and PRO panels with a line per model; one row per level (image-level, pixel-level).

    Args:
        title: figure title (dataset and class).
        curves: model -> {key: Curve}, key ``<level>/<kind>`` or ``<kind>`` (see :mod:`medad.reports.loader`).
        fpr_limit: the AUPRO integration limit, drawn as a dashed line on PRO panels whose x-axis it bounds.
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
                _draw_curves(ax, kind, level, {model: per_model.get(key) for model, per_model in curves.items()})
                if kind == "pro" and fpr_limit:
                    ax.axvline(fpr_limit, color="0.4", lw=0.8, ls="--")
                    ax.set_xlim(0, min(1.0, 1.5 * fpr_limit))
        fig.suptitle(title)
        return figure_png(fig)


def _draw_curves(ax: Axes, kind: str, level: str, per_model: Mapping[str, Curve | None]) -> None:
    name, xlabel, ylabel = _CURVE_TITLES[kind]
    for model in sorted(per_model):
        curve = per_model[model]
        if curve is not None:
            ax.plot(curve.x, curve.y, lw=1.5, label=model if curve.area is None else f"{model} ({curve.area:.3f})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
    ax.set(title=f"{level}-level {name}" if level else name, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower left" if kind == "pr" else "lower right")


def histogram_figure(title: str, per_image: pd.DataFrame) -> bytes:
    """Normal vs abnormal image-score histograms, one panel per model, shared bins within a panel.

    Args:
        title: figure title (the dataset).
        per_image: rows of one dataset with ``model``, ``label`` and ``image_score``.
    """
    models = sorted(per_image["model"].unique())
    with _fixed_style():
        fig = _new_figure(4.2 * max(len(models), 1), 3.4)
        axes = fig.subplots(1, max(len(models), 1), squeeze=False)[0]
        for ax, model in zip(axes, models, strict=False):
            part = per_image[(per_image["model"] == model) & per_image["image_score"].notna()]
            scores = part["image_score"].to_numpy(dtype=np.float64)
            labels = part["label"]
            lo, hi = (float(scores.min()), float(scores.max())) if scores.size else (0.0, 1.0)
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
            for value, name, color in ((0, "normal", "#1f77b4"), (1, "abnormal", "#d62728")):
                chosen = scores[(labels == value).fillna(False).to_numpy()]
                ax.hist(chosen, bins=bins, alpha=0.55, color=color, label=f"{name} (n={chosen.size})")
            unknown = int(labels.isna().sum())
            ax.set(title=model if not unknown else f"{model} ({unknown} unlabelled not shown)")
            ax.set(xlabel="image score", ylabel="images")
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


def cases_figure(title: str, cases: Sequence[CaseView], vmin: float = 0.0, vmax: float = 1.0) -> bytes:
    """A row per case: the image, and the heatmap overlaid on it with the ground-truth contour.

    The heatmap uses a perceptually uniform colormap on a fixed ``[vmin, vmax]`` range shared by all rows, so
    colours compare across cases; a research-use notice is drawn on the figure.
    """
    with _fixed_style():
        fig = _new_figure(6.4, 2.9 * max(len(cases), 1) + 0.5)
        axes = fig.subplots(max(len(cases), 1), 2, squeeze=False)
        mappable = None
        for (ax_image, ax_overlay), case in zip(axes, cases, strict=False):
            step = _display_stride(case.image.shape)
            image = np.clip(np.asarray(case.image, dtype=np.float32)[::step, ::step], 0.0, 1.0)
            heatmap = np.asarray(case.heatmap, dtype=np.float32)
            if heatmap.shape[:2] != case.image.shape[:2]:
                rows = np.linspace(0, heatmap.shape[0] - 1, case.image.shape[0]).round().astype(int)
                cols = np.linspace(0, heatmap.shape[1] - 1, case.image.shape[1]).round().astype(int)
                heatmap = heatmap[np.ix_(rows, cols)]
            heatmap = heatmap[::step, ::step]
            ax_image.imshow(image, interpolation="nearest")
            ax_overlay.imshow(image, interpolation="nearest")
            mappable = ax_overlay.imshow(
                heatmap, cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax, alpha=0.55, interpolation="nearest"
            )
            if case.mask is not None and np.any(case.mask):
                mask = np.asarray(case.mask, dtype=np.float32)[::step, ::step]
                ax_overlay.contour(mask, levels=[0.5], colors=CONTOUR_COLOR, linewidths=1.2)
            ax_image.set_title(case.caption, fontsize="small", loc="left")
            ax_overlay.set_title("heatmap + ground-truth contour", fontsize="small")
            for ax in (ax_image, ax_overlay):
                ax.set_axis_off()
        if mappable is not None:
            fig.colorbar(mappable, ax=axes[:, 1].tolist(), shrink=0.8, label="pixel score")
        fig.suptitle(f"{title}\n{RESEARCH_NOTICE}", fontsize="medium")
        return figure_png(fig)
