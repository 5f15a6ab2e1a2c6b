"""Where pixel metrics are computed: at each image's native size (medad's default) or, as the released AD-DINOv3
test script does, at the model's input size with the masks resized to it.

``native``: maps (stored at native size) against the masks as read. ``model``: every map is resized to the
model's ``S x S`` input (bilinear) and every mask too (bilinear, then > 0.5, as the release's mask pipeline),
so pixel AUROC / AP / F1-max / AUPRO are computed over S x S pixels per image whatever the image size. medad
stores maps at native size, so a ``model``-resolution map is the stored map resampled, not the model's raw
output; the two differ by the interpolation there and back (small, but not zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medad.errors import ConfigError

RESOLUTIONS = ("native", "model")


def model_resolution(resolution: str, metas: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The side in pixels to evaluate at (``None`` = native) for predictions with these ``meta.json`` contents.

    Raises:
        ConfigError: an unknown resolution, or ``model`` when a predictions folder records no model input size
            or the models' sizes differ.
    """
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"evaluation resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if resolution == "native":
        return None
    recorded = {name: (meta.get("model") or {}).get("image_size") for name, meta in metas.items()}
    sizes = {name: size for name, size in recorded.items() if isinstance(size, int)}
    unknown = sorted(set(recorded) - set(sizes))
    if unknown:
        raise ConfigError(
            f"predictions of {', '.join(unknown)} record no model input size (meta.json model.image_size), so "
            "'model' resolution is undefined for them; evaluate at resolution 'native'"
        )
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"the models' input sizes differ ({sizes}); 'model' resolution needs one size: evaluate them "
            "separately or at resolution 'native'"
        )
    (size,) = set(sizes.values())
    return size


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def resize_map(pixel_map: np.ndarray, size: int | None) -> np.ndarray:
    """A map at ``size x size`` (bilinear); unchanged when ``size`` is None."""
    return pixel_map if size is None else _resize(pixel_map, size)


def resize_mask(mask: np.ndarray, size: int | None) -> np.ndarray:
    """A boolean mask at ``size x size`` (bilinear, then > 0.5, as the release); unchanged when ``size`` is None."""
    return mask if size is None else _resize(mask.astype(np.float32), size) > 0.5


def resolution_settings(resolution: str, size: int | None) -> dict[str, Any]:
    """What ``metrics.json`` records about the evaluation resolution."""
    if size is None:
        return {"mode": "native", "description": "maps against masks at each image's native size"}
    return {
        "mode": "model",
        "size": size,
        "description": f"maps and masks resized to {size}x{size} (bilinear; masks then > 0.5), as the released code",
    }
