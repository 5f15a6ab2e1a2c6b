"""MONAI transforms that turn manifest rows into model-ready samples, and :func:`make_dataset`.

The chain is: :class:`LoadRowItem` (the image resized to the model size - Pillow's antialiased bilinear in uint8
for 8-bit images, area averaging in float for DICOM / NIfTI / 16-bit -, or kept at its native size for tiled
scoring; the binarised mask resized by nearest neighbour; the original size) -> :class:`ToSampled` (the image
normalised with the backbone's mean/std by :func:`normalize_images`, or kept as uint8 for the GPU to normalise)
-> MONAI's ``EnsureTyped`` and ``SelectItemsd`` (the Sample contract of ``docs/architecture.md``: its keys and
dtypes). ``ToSampled`` follows MONAI's dictionary contract (``keys``, ``allow_missing_keys``, the work done by
the array transform :class:`ToSample`); :class:`LoadRowItem` reads several fields of a row, so it is a plain
transform of the item. Every step is deterministic, so with a cache folder the whole result is stored by MONAI's
``PersistentDataset`` under a sub-folder named by a hash of the preprocessing config.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, EnsureTyped, MapTransform, SelectItemsd, Transform

from medad.data.readers import read_image_resized, read_mask, resize_mask
from medad.utils.io import hash_config

PREPROCESS_VERSION = 2


def normalize_images(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Normalise (B,3,H,W) or (3,H,W) images with per-channel mean/std, on the images' device.

    ``mean`` / ``std`` may be float32 tensors already on that device (what a loop passes, to avoid a host copy
    per batch).

    uint8 images are first scaled to [0, 1] (``x / 255``); float images are taken as already in [0, 1]. The same
    float32 operations run on the CPU (float samples) and on the GPU (uint8 samples), so both give equal values.
    """
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    shape = (3, 1, 1) if x.dim() == 3 else (1, 3, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape)
    return (x - m) / s


class LoadRow(Transform):
    """Array transform: a manifest row -> (image (3,S,S), mask (1,S,S) float32 {0,1} or None, native (H, W)).

    The image is uint8 for 8-bit sources and float32 in [0, 1] otherwise (see
    :func:`medad.data.readers.read_image_resized`). With ``image_size=None`` nothing is resized: the image and
    the mask keep their native (H, W).

    Args:
        image_size: Side S of the square output, or ``None`` for the native size (tiled scoring).
        with_mask: Read and resize the mask (scoring does not need it).
    """

    def __init__(self, image_size: int | None, with_mask: bool = True) -> None:
        self.image_size = None if image_size is None else int(image_size)
        self.with_mask = with_mask

    def __call__(self, row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """Read and resize the row's image (and mask)."""
        image, native = read_image_resized(row, self.image_size)
        mask = None
        if self.with_mask:
            mask = read_mask(row) if self.image_size is None else resize_mask(read_mask(row), self.image_size)
            mask = mask[None].astype(np.float32)
        return np.ascontiguousarray(image.transpose(2, 0, 1)), mask, native


class LoadRowItem(Transform):
    """Item transform around :class:`LoadRow`: adds ``image``, ``mask`` (if asked) and ``orig_size``.

    Not a ``MapTransform``: it reads the row's path fields (``image_path``, ``frame``, ``mask_path``, ...)
    together rather than transforming one key.
    """

    def __init__(self, image_size: int | None, with_mask: bool = True) -> None:
        self.loader = LoadRow(image_size, with_mask)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Load the item's image and mask (the item holds the manifest row's fields)."""
        item = dict(data)
        item["image"], mask, native = self.loader(item)
        if mask is not None:
            item["mask"] = mask
        item["orig_size"] = np.array(native, dtype=np.int64)
        return item


class ToSample(Transform):
    """Array transform: an image (3,S,S) uint8 or float in [0, 1] -> a model input tensor.

    Args:
        mean: Per-channel mean of the backbone's normalisation.
        std: Per-channel std of the backbone's normalisation.
        uint8: Return uint8 (float sources are rounded to 256 levels, as a display shows them) and leave the
            normalisation to :func:`normalize_images` on the GPU; otherwise return the normalised float32 tensor.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], uint8: bool = False) -> None:
        self.mean, self.std, self.uint8 = tuple(mean), tuple(std), uint8

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Return the image as a plain contiguous tensor."""
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if self.uint8:
            if tensor.dtype != torch.uint8:
                tensor = (tensor * 255.0).round().clamp(0, 255).to(torch.uint8)
            return tensor.contiguous()
        return normalize_images(tensor, self.mean, self.std).contiguous()


class ToSampled(MapTransform):
    """Dictionary wrapper of :class:`ToSample`: each of ``keys`` (the image) becomes a model input tensor.

    Args:
        keys: Keys of the images to convert.
        mean: Per-channel mean of the backbone's normalisation.
        std: Per-channel std of the backbone's normalisation.
        uint8: See :class:`ToSample`.
        allow_missing_keys: Skip a key the item lacks instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mean: Sequence[float],
        std: Sequence[float],
        uint8: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToSample(mean, std, uint8)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert every present key; the other fields pass through."""
        item = dict(data)
        for key in self.key_iterator(item):
            item[key] = self.converter(item[key])
        return item


SAMPLE_FIELDS: tuple[str, ...] = ("image", "label", "class_name", "index", "orig_size", "mask")
"""The keys of a Sample (``mask`` only when loaded); everything else of the item is dropped."""


def preprocessing(
    image_size: int | None, mean: Sequence[float], std: Sequence[float], *, masks: bool = True, uint8: bool = False
) -> Compose:
    """The deterministic MONAI chain from a manifest item to a Sample at ``image_size`` (``None``: native size).

    The Sample's dtypes: image float32 (uint8 with ``uint8``), mask float32, label / index / orig_size int64.
    """
    return Compose(
        [
            LoadRowItem(image_size, with_mask=masks),
            ToSampled("image", mean, std, uint8=uint8),
            EnsureTyped(("label", "index", "orig_size"), dtype=torch.int64, track_meta=False),
            EnsureTyped("mask", dtype=torch.float32, track_meta=False, allow_missing_keys=True),
            SelectItemsd(SAMPLE_FIELDS, allow_missing_keys=True),
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
                "case_id": str(row.get("case_id") or ""),  # how read errors name a DICOM source (never its path)
                "stamp": f"{_file_stamp(row['image_path'])}/{_file_stamp(row.get('mask_path') or '')}",
            }
        )
    return items


def cache_folder(
    cache_dir: str | Path,
    image_size: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    masks: bool = True,
    uint8: bool = False,
) -> Path:
    """The cache sub-folder for one preprocessing config (a hash of size, mean, std, options and version)."""
    config = {
        "image_size": None if image_size is None else int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "masks": masks,
        "uint8": uint8,
        "version": PREPROCESS_VERSION,
    }
    return Path(cache_dir).expanduser() / f"preprocess-{hash_config(config)}"


def make_dataset(
    manifest: pd.DataFrame,
    image_size: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    cache_dir: str | Path | None = None,
    *,
    masks: bool = True,
    uint8: bool = False,
) -> Dataset:
    """A MONAI dataset yielding Samples (see ``docs/architecture.md``) for every manifest row.

    Args:
        manifest: A manifest; the row position is the sample's ``index``.
        image_size: Side of the square model input, or ``None`` to yield every image (and mask) at its native
            (H, W), unresized, e.g. for tiled scoring (``medad.engine.tiling``); items then differ in size, so
            a DataLoader over them needs ``batch_size=1``.
        mean: Per-channel mean of the backbone's normalisation.
        std: Per-channel standard deviation of the backbone's normalisation.
        cache_dir: If given, resized tensors are cached on disk (MONAI ``PersistentDataset``) under a
            sub-folder keyed by the preprocessing config; each item's key includes its files' size and mtime,
            so an edited file is re-read.
        masks: Include the resized ``mask`` (training, evaluation); scoring leaves it out.
        uint8: Yield uint8 images for :func:`normalize_images` to normalise on the GPU: 4x fewer bytes through
            the loader workers, the same values for 8-bit images; DICOM / NIfTI / 16-bit images are rounded to
            256 grey levels after windowing.

    Returns:
        A ``monai.data.Dataset`` (``PersistentDataset`` when caching).
    """
    transform = preprocessing(image_size, mean, std, masks=masks, uint8=uint8)
    items = _items(manifest)
    if cache_dir is None:
        return Dataset(items, transform)
    folder = cache_folder(cache_dir, image_size, mean, std, masks=masks, uint8=uint8)
    folder.mkdir(parents=True, exist_ok=True)
    return PersistentDataset(items, transform, cache_dir=folder)
