"""MONAI transforms that turn manifest rows into model-ready samples, and :func:`make_dataset`.

The chain is: :class:`LoadRowd` (native image (3,H,W) in [0,1], binarised mask (1,H,W), original size) ->
``Resized`` (image: area averaging, which anti-aliases when shrinking; mask: nearest) ->
``NormalizeIntensityd`` (backbone mean/std, per channel) -> :class:`ToSampled` (the Sample contract of
``docs/architecture.md``). Every step is deterministic, so with a cache folder the whole result is stored by
MONAI's ``PersistentDataset`` under a sub-folder named by a hash of the preprocessing config.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, MapTransform, NormalizeIntensityd, Resized, Transform

from medad.data.readers import read_image, read_mask
from medad.utils.io import hash_config

PREPROCESS_VERSION = 1
SAMPLE_KEYS: tuple[str, ...] = ("image", "mask", "label", "class_name", "index", "orig_size")


class LoadRow(Transform):
    """Array transform: a manifest row -> (image (3,H,W) float32 in [0,1], mask (1,H,W) float32 in {0,1})."""

    def __call__(self, row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Read the row's image and binarised mask at native resolution, channel-first."""
        image = read_image(row)
        mask = read_mask(row)
        return np.ascontiguousarray(image.transpose(2, 0, 1)), mask[None].astype(np.float32)


class LoadRowd(MapTransform):
    """Dictionary transform around :class:`LoadRow`: adds ``image``, ``mask`` and ``orig_size`` (H, W)."""

    def __init__(self, keys: Sequence[Hashable] = ("image", "mask")) -> None:
        super().__init__(keys)
        self.loader = LoadRow()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load the item's image and mask (the item holds the manifest row's fields)."""
        item = dict(data)
        image, mask = self.loader(item)
        image_key, mask_key = self.keys
        item[image_key], item[mask_key] = image, mask
        item["orig_size"] = np.array(image.shape[1:], dtype=np.int64)
        return item


class ToSample(Transform):
    """Array transform: convert a value to a contiguous plain tensor of the given dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, value: Any) -> torch.Tensor:
        """Return ``value`` as a plain (non-MetaTensor) tensor."""
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        return tensor.as_subclass(torch.Tensor).to(self.dtype).contiguous()


class ToSampled(MapTransform):
    """Dictionary transform: keep only the Sample contract's keys with their dtypes."""

    def __init__(self) -> None:
        super().__init__(("image", "mask", "label", "index", "orig_size"))
        self.floats = ToSample(torch.float32)
        self.ints = ToSample(torch.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[str, Any]:
        """Return the sample dict: image/mask float32, label/index/orig_size int64, class_name str."""
        return {
            "image": self.floats(data["image"]),
            "mask": self.floats(data["mask"]),
            "label": self.ints(data["label"]),
            "class_name": str(data["class_name"]),
            "index": self.ints(data["index"]),
            "orig_size": self.ints(data["orig_size"]),
        }


def preprocessing(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Compose:
    """The deterministic MONAI chain from a manifest item to a Sample at ``image_size``."""
    size = (int(image_size), int(image_size))
    return Compose(
        [
            LoadRowd(),
            Resized(keys="image", spatial_size=size, mode="area"),
            Resized(keys="mask", spatial_size=size, mode="nearest"),
            NormalizeIntensityd(
                keys="image",
                subtrahend=np.asarray(mean, dtype=np.float32),
                divisor=np.asarray(std, dtype=np.float32),
                channel_wise=True,
            ),
            ToSampled(),
        ]
    )


def _file_stamp(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    return f"{info.st_size}-{info.st_mtime_ns}"


def _items(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(manifest.to_dict("records")):
        frame, axis, label = row.get("frame"), row.get("slice_axis"), row.get("label")
        items.append(
            {
                "index": index,
                "image_path": row["image_path"],
                "mask_path": row.get("mask_path") or "",
                "mask_rule": row.get("mask_rule") or ">0",
                "source_format": row.get("source_format") or "image",
                "frame": -1 if frame is None or pd.isna(frame) else int(frame),
                "slice_axis": -1 if axis is None or pd.isna(axis) else int(axis),
                "label": -1 if label is None or pd.isna(label) else int(label),
                "class_name": str(row["class_name"]),
                "stamp": f"{_file_stamp(row['image_path'])}/{_file_stamp(row.get('mask_path') or '')}",
            }
        )
    return items


def cache_folder(cache_dir: str | Path, image_size: int, mean: Sequence[float], std: Sequence[float]) -> Path:
    """The cache sub-folder for one preprocessing config (a hash of size, mean, std and version)."""
    config = {
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "version": PREPROCESS_VERSION,
    }
    return Path(cache_dir).expanduser() / f"preprocess-{hash_config(config)}"


def make_dataset(
    manifest: pd.DataFrame,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    cache_dir: str | Path | None = None,
) -> Dataset:
    """A MONAI dataset yielding Samples (see ``docs/architecture.md``) for every manifest row.

    Args:
        manifest: A manifest; the row position is the sample's ``index``.
        image_size: Side of the square model input.
        mean: Per-channel mean of the backbone's normalisation.
        std: Per-channel standard deviation of the backbone's normalisation.
        cache_dir: If given, resized tensors are cached on disk (MONAI ``PersistentDataset``) under a
            sub-folder keyed by the preprocessing config; each item's key includes its files' size and mtime,
            so an edited file is re-read.

    Returns:
        A ``monai.data.Dataset`` (``PersistentDataset`` when caching).
    """
    transform = preprocessing(image_size, mean, std)
    items = _items(manifest)
    if cache_dir is None:
        return Dataset(items, transform)
    folder = cache_folder(cache_dir, image_size, mean, std)
    folder.mkdir(parents=True, exist_ok=True)
    return PersistentDataset(items, transform, cache_dir=folder)
