"""Read a manifest row's image and mask at native resolution.

Plain images go through MONAI's ``PILReader`` with ``reverse_indexing=False`` so arrays are (H, W[, C]); it
is named explicitly so TIFF (CVC-ClinicDB originals) is read too. DICOM and NIfTI rows go through
:mod:`medad.data.dicom` and :mod:`medad.data.nifti`. Every unreadable file is a DataError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import PILReader
from PIL import Image, UnidentifiedImageError

from medad.data.dicom import dicom_frame_shape, looks_like_dicom, read_dicom_frame, read_dicom_mask
from medad.data.nifti import nifti_slice_shape, read_nifti_image, read_nifti_mask
from medad.errors import DataError

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _to_rgb_or_wide(image: Image.Image) -> Image.Image:
    return image if image.mode in _HIGH_BIT_MODES else image.convert("RGB")


_IMAGE_READER = PILReader(converter=_to_rgb_or_wide, reverse_indexing=False)
_MASK_READER = PILReader(reverse_indexing=False)


def _read_pil(reader: PILReader, path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; rebuild the manifest or restore the file")
    try:
        image = reader.read(str(path))
        if not reader.converter:
            image.load()
        data, _ = reader.get_data(image)
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{what} {path} cannot be decoded ({type(exc).__name__}: {exc}); the file is truncated or not an "
            "image - re-export or remove it"
        ) from None
    return np.asarray(data)


def _source(row: Mapping[str, Any]) -> str:
    return str(row.get("source_format") or "image")


def _frame(row: Mapping[str, Any]) -> int:
    frame = row.get("frame")
    return 0 if frame is None or pd.isna(frame) or int(frame) < 0 else int(frame)


def read_image(row: Mapping[str, Any]) -> np.ndarray:
    """Read a manifest row's image at native resolution.

    Args:
        row: A manifest row (``pd.Series`` or mapping with ``image_path``, ``source_format``, ``frame``...).

    Returns:
        An (H, W, 3) float32 array in [0, 1].

    Raises:
        DataError: The file is missing, truncated, not an image, or needs a missing DICOM decoder.
    """
    source = _source(row)
    path = Path(str(row["image_path"]))
    if source == "dicom":
        return read_dicom_frame(path, _frame(row))
    if source == "nifti":
        return read_nifti_image(row)
    data = _read_pil(_IMAGE_READER, path, "image")
    if data.ndim == 2:
        scale = 65535.0 if data.max(initial=0) > 255 or data.dtype == np.uint16 else 255.0
        gray = np.clip(data.astype(np.float32) / scale, 0, 1)
        return np.repeat(gray[..., None], 3, axis=2)
    return (data[..., :3].astype(np.float32) / 255.0).clip(0, 1)


def read_image_resized(row: Mapping[str, Any], size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a row's image resized to ``size`` x ``size`` (``None``: kept at its native size), and its native (H, W).

    8-bit images are resized in uint8 by Pillow's antialiased bilinear filter (the resize of the released
    AD-DINOv3 code, and several times faster than float area averaging) and returned as uint8 (S, S, 3);
    DICOM, NIfTI and 16-bit images are resized by area averaging and returned as float32 (S, S, 3) in [0, 1].

    Raises:
        DataError: as :func:`read_image`.
    """
    path = Path(str(row["image_path"]))
    if _source(row) == "image":
        if not path.is_file():
            raise DataError(f"image {path} does not exist; rebuild the manifest or restore the file")
        try:
            image = _IMAGE_READER.read(str(path))
            if image.mode not in _HIGH_BIT_MODES:
                width, height = image.size
                resized = image if size is None else image.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(resized, dtype=np.uint8), (height, width)
        except _DECODE_ERRORS as exc:
            raise DataError(
                f"image {path} cannot be decoded ({type(exc).__name__}: {exc}); the file is truncated or not an "
                "image - re-export or remove it"
            ) from None
    data = read_image(row)
    if size is None:
        return data, (int(data.shape[0]), int(data.shape[1]))
    tensor = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))[None]
    resized = torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0]
    return resized.permute(1, 2, 0).numpy(), (int(data.shape[0]), int(data.shape[1]))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a binary (H, W) mask to (size, size) float32 {0, 1}, pixel-centre aligned."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return (np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 127).astype(np.float32)


def image_shape(row: Mapping[str, Any]) -> tuple[int, int]:
    """(H, W) of a row's image, read from the header only where the format allows."""
    source = _source(row)
    path = Path(str(row["image_path"]))
    if source == "dicom":
        return dicom_frame_shape(path)
    if source == "nifti":
        return nifti_slice_shape(row)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist; rebuild the manifest or restore the file") from None
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"image {path} cannot be opened ({type(exc).__name__}); it is not an image - remove it"
        ) from None
    return height, width


def binarise(mask: np.ndarray, rule: str) -> np.ndarray:
    """Binarise a mask array with a manifest ``mask_rule`` (``>0`` or ``>127``); colour masks use their max channel."""
    if mask.ndim == 3:
        mask = mask[..., : min(mask.shape[2], 3)].max(axis=2)
    if rule == ">127":
        return mask > 127
    if rule in (">0", ""):
        return mask > 0
    raise DataError(f"unknown mask_rule '{rule}' in the manifest; use '>0' or '>127'")


def read_mask(row: Mapping[str, Any]) -> np.ndarray:
    """Read a manifest row's mask at native resolution, binarised with the row's ``mask_rule``.

    Args:
        row: A manifest row.

    Returns:
        An (H, W) bool array; all-False when the row has no mask.

    Raises:
        DataError: The mask is unreadable or its size differs from its image's.
    """
    mask_path = str(row.get("mask_path") or "")
    height, width = image_shape(row)
    if not mask_path:
        return np.zeros((height, width), dtype=bool)
    source = _source(row)
    path = Path(mask_path)
    if source == "nifti":
        mask = read_nifti_mask(row)
    elif looks_like_dicom(path):
        mask = read_dicom_mask(row)
    else:
        mask = binarise(_read_pil(_MASK_READER, path, "mask"), str(row.get("mask_rule") or ">0"))
    if mask.shape != (height, width):
        raise DataError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image {row['image_path']} is "
            f"{width}x{height}; re-export the mask at the image size"
        )
    return mask
