"""PNG artefacts per image: binary mask, 16-bit heatmap, display image and a research-use-only overlay.

PNG text chunks carry only the software name and the research-use notice, never a path or an identifier.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, PngImagePlugin

import medad
from medad.export.thresholds import Threshold
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


def write_overlay_png(
    image: np.ndarray,
    pixel_map: np.ndarray,
    mask: np.ndarray,
    threshold: Threshold,
    score: float,
    case: str,
    path: Path,
) -> None:
    """Write an overlay: image, translucent heatmap, mask fill + contour, colour bar and a research notice.

    Args:
        image: display image in [0, 1], (H, W) or (H, W, 3).
        pixel_map: the anomaly map (H, W).
        mask: the binary mask (H, W).
        threshold: the threshold that made ``mask`` (shown on the colour bar).
        score: the image-level anomaly score.
        case: the pseudonymous case id (the only identifier shown).
        path: where to write the PNG.
    """
    h, w = mask.shape
    scale = max(1.0, 384.0 / max(h, w))
    fig = Figure(figsize=(w * scale / 100 + 1.6, h * scale / 100 + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.1, 0.76, 0.78))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    lo, hi = heatmap_range(pixel_map)
    heat = ax.imshow(pixel_map, cmap="inferno", vmin=lo, vmax=hi, alpha=0.4, interpolation="nearest")
    if mask.any():
        ax.imshow(np.ma.masked_where(~mask, np.ones_like(pixel_map)), cmap="winter", alpha=0.3, interpolation="nearest")
        if mask.shape[0] > 1 and mask.shape[1] > 1:
            ax.contour(mask.astype(float), levels=[0.5], colors=["cyan"], linewidths=1.2)
    ax.set_axis_off()
    cax = fig.add_axes((0.82, 0.1, 0.04, 0.78))
    bar = fig.colorbar(heat, cax=cax)
    bar.set_label("anomaly score", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if lo <= threshold.value <= hi:
        bar.ax.axhline(threshold.value, color="cyan", linewidth=1.5)
    fig.text(0.02, 0.95, "RESEARCH USE ONLY", color="red", fontsize=10, fontweight="bold")
    fig.text(0.02, 0.02, f"{case}  score {score:.3f}  threshold {threshold.describe()}", fontsize=6)
    buffer = io.BytesIO()
    fig.savefig(
        buffer, format="png", metadata={"Software": f"medad {medad.__version__}", "Disclaimer": RESEARCH_NOTICE}
    )
    write_bytes_atomic(path, buffer.getvalue())
