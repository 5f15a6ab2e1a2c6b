"""PNG artefacts per image: binary mask, 16-bit heatmap, display image and a research-use-only overlay.

PNG text chunks carry only the software name and the research-use notice, never a path or an identifier.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, PngImagePlugin

import medad
from medad.export.thresholds import Threshold, score_text
from medad.utils.colors import GT_CONTOUR, HEATMAP_CMAP, PRED_CONTOUR
from medad.utils.io import write_bytes_atomic

RESEARCH_NOTICE = "RESEARCH USE ONLY - not for diagnostic use"


def _png_info() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"medad {medad.__version__}")
    info.add_text("Disclaimer", RESEARCH_NOTICE)
    return info


def _save(img: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", pnginfo=_png_info())
    write_bytes_atomic(path, buffer.getvalue())


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """Write a boolean (H, W) mask as an 8-bit 0/255 PNG at the same size."""
    _save(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"), path)


def heatmap_range(pixel_map: np.ndarray) -> tuple[float, float]:
    """Return the (low, high) range a 16-bit heatmap PNG is scaled to: [0, 1] when the map fits, else min/max."""
    finite = pixel_map[np.isfinite(pixel_map)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def write_heatmap_png(pixel_map: np.ndarray, path: Path) -> tuple[float, float]:
    """Write a float map as a 16-bit greyscale PNG; value = low + png / 65535 * (high - low).

    Returns:
        The (low, high) range, to be recorded beside the file.
    """
    lo, hi = heatmap_range(pixel_map)
    scaled = np.clip((np.nan_to_num(pixel_map, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    _save(Image.fromarray(np.round(scaled * 65535).astype(np.uint16)), path)
    return lo, hi


def write_display_png(image: np.ndarray, path: Path) -> None:
    """Write a [0, 1] display image (grey or RGB) as an 8-bit PNG."""
    arr = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    _save(Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB"), path)


RANDOM_WEIGHTS_NOTICE = "RANDOM WEIGHTS - NOT A RESULT: the model's weights are random; these maps mean nothing"


def overlay_caption(
    case: str,
    score: float,
    threshold: Threshold,
    *,
    model: str = "",
    random_weights: bool = False,
    has_gt: bool = False,
) -> tuple[str, str]:
    """Return the overlay's (headline, footer) text: notices, then case, model, score, threshold and contour key."""
    headline = "RESEARCH USE ONLY" + ("  |  " + RANDOM_WEIGHTS_NOTICE if random_weights else "")
    key = "cyan contour: predicted mask" + ("; magenta contour: ground truth" if has_gt else "")
    named = f"{case}  {model}" if model else case
    footer = f"{named}  score {score_text(score, threshold.value, 3)}  threshold {threshold.describe()}\n{key}"
    return headline, footer


def _contours(ax: Any, mask: np.ndarray | None, color: str) -> None:
    if mask is not None and mask.any() and mask.shape[0] > 1 and mask.shape[1] > 1:
        ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.5)


def write_overlay_png(
    image: np.ndarray,
    pixel_map: np.ndarray,
    mask: np.ndarray,
    threshold: Threshold,
    score: float,
    case: str,
    path: Path,
    *,
    gt_mask: np.ndarray | None = None,
    model: str = "",
    random_weights: bool = False,
) -> None:
    """Write an overlay: the image and the opaque heatmap side by side, both with the contours, a colour bar.

    The heatmap panel is drawn opaque with :data:`~medad.utils.colors.HEATMAP_CMAP` and nothing blended over
    it, so its colours are exactly the colour bar's. The predicted-mask contour is
    :data:`~medad.utils.colors.PRED_CONTOUR`, the ground-truth contour :data:`~medad.utils.colors.GT_CONTOUR`
    (when a mask exists), on both panels.

    Args:
        image: display image in [0, 1], (H, W) or (H, W, 3).
        pixel_map: the anomaly map (H, W).
        mask: the binary predicted mask (H, W).
        threshold: the threshold that made ``mask`` (shown on the colour bar).
        score: the image-level anomaly score.
        case: the pseudonymous case id (the only identifier shown).
        path: where to write the PNG.
        gt_mask: the ground-truth mask (H, W), or None when the image has none.
        model: the model name shown in the caption.
        random_weights: add the RANDOM WEIGHTS notice to the caption (and a PNG text chunk).
    """
    h, w = mask.shape
    scale = max(1.0, 384.0 / max(h, w))
    pw, ph = w * scale / 100, h * scale / 100
    left, gap, right, top, bottom = 0.15, 0.25, 1.0, 0.55, 0.5
    fig_w, fig_h = left + 2 * pw + gap + right, bottom + ph + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    axes = []
    for k in range(2):
        x0 = left + k * (pw + gap)
        axes.append(fig.add_axes((x0 / fig_w, bottom / fig_h, pw / fig_w, ph / fig_h)))
    axes[0].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    lo, hi = heatmap_range(pixel_map)
    heat = axes[1].imshow(pixel_map, cmap=HEATMAP_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
    for ax, title in zip(axes, ("image", "anomaly map"), strict=True):
        _contours(ax, gt_mask, GT_CONTOUR)
        _contours(ax, mask, PRED_CONTOUR)
        ax.set_axis_off()
        ax.set_title(title, fontsize=7, pad=2)
    cax = fig.add_axes(((left + 2 * pw + gap + 0.1) / fig_w, bottom / fig_h, 0.15 / fig_w, ph / fig_h))
    bar = fig.colorbar(heat, cax=cax)
    bar.set_label("anomaly score", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if lo <= threshold.value <= hi:
        bar.ax.axhline(threshold.value, color=PRED_CONTOUR, linewidth=1.5)
    headline, footer = overlay_caption(
        case, score, threshold, model=model, random_weights=random_weights, has_gt=gt_mask is not None
    )
    fig.text(0.01, 1 - 0.08 / fig_h, headline, color="red", fontsize=8, fontweight="bold", va="top")
    fig.text(0.01, 0.04 / fig_h, footer, fontsize=6, va="bottom")
    metadata = {"Software": f"medad {medad.__version__}", "Disclaimer": RESEARCH_NOTICE}
    if random_weights:
        metadata["Warning"] = RANDOM_WEIGHTS_NOTICE
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata=metadata)
    write_bytes_atomic(path, buffer.getvalue())
