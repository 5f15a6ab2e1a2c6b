"""Read a manifest row's image and mask at native resolution.

Plain images (PNG, JPEG, BMP, TIFF such as CVC-ClinicDB's originals) are decoded by Pillow as (H, W[, C]) arrays,
as MONAI's ``PILReader(reverse_indexing=False)`` gives them, without loading torch. DICOM and NIfTI rows go through
:mod:`medad.data.dicom` and :mod:`medad.data.nifti`. Every unreadable file is a DataError naming it.

An image larger than :func:`max_pixels` (``MEDAD_MAX_IMAGE_PIXELS``, default 100 million pixels per image or
frame) is refused before it is decoded, so a decompression bomb cannot exhaust memory; Pillow's own limit and
its warning are turned off in favour of this one. A mask that is not two-valued is binarised by its rule with a
:class:`~medad.errors.DataWarning` naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom.uid
from PIL import Image, UnidentifiedImageError

from medad.data.dicom import dicom_frame_shape, looks_like_dicom, read_dicom_frame, read_dicom_mask
from medad.data.nifti import nifti_slice_shape, read_nifti_image, read_nifti_mask
from medad.errors import ConfigError, DataError, DataWarning

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
DEFAULT_MAX_PIXELS = 100_000_000
MIN_IMAGE_SIDE = 16
"""The smallest image side (px) medad reads without a warning: one patch of the ViT backbones it ships (DINOv3
and CLIP ViT-B/16 see 16 x 16 px patches). A smaller image (a 1 x 1 px file, a 1 x 1 x 1 volume) holds less than
one patch: upscaled to the model input it is a flat picture whose score means little, so reading it warns
(:class:`~medad.errors.DataWarning`, naming the file; ``medad datasets check`` lists it as a problem)."""
Image.MAX_IMAGE_PIXELS = None  # medad's own limit (max_pixels) applies, before decoding, with a clear message


def max_pixels() -> int:
    """The largest image (or DICOM frame, NIfTI slice) medad decodes, in pixels: ``MEDAD_MAX_IMAGE_PIXELS`` or
    :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get("MEDAD_MAX_IMAGE_PIXELS", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"MEDAD_MAX_IMAGE_PIXELS={raw!r} is not a positive whole number; set it to e.g. 100000000")
    return value


def check_pixel_count(path: Path | str, pixels: int, what: str = "image") -> None:
    """Refuse an image of more than :func:`max_pixels` pixels (a decompression bomb or a whole-slide scan)."""
    limit = max_pixels()
    if pixels > limit:
        subject = " ".join(word for word in (what, str(path)) if word)
        raise DataError(
            f"{subject} has {pixels:,} pixels, over medad's limit of {limit:,} (a decompression bomb or an "
            "image too large to score); downscale it, or raise MEDAD_MAX_IMAGE_PIXELS if it is genuine"
        )


def _open_checked(path: Path, what: str, image: bool) -> Image.Image:
    """Open and decode a plain image, refusing it over the pixel limit on its header (before decoding): an image
    converted to RGB unless high bit depth, a mask as stored. The file is closed on return, refused or not."""
    with Image.open(path) as opened:
        width, height = opened.size
        check_pixel_count(path, width * height, what)
        if image and opened.mode not in _HIGH_BIT_MODES:
            return opened.convert("RGB")
        return opened.copy()


def _read_pil(path: Path, what: str, image: bool) -> np.ndarray:
    """Decode a plain image with Pillow as (H, W[, C]) (see :func:`_open_checked`). This is what MONAI's
    ``PILReader(reverse_indexing=False)`` returns (its ``get_data`` is ``np.asarray`` of the opened image), read
    without MONAI so that ``medad datasets check`` loads no torch."""
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; rebuild the manifest or restore the file")
    try:
        return np.asarray(_open_checked(path, what, image))
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{what} {path} cannot be decoded ({type(exc).__name__}: {exc}); the file is truncated or not an "
            "image - re-export or remove it"
        ) from None


def _source(row: Mapping[str, Any]) -> str:
    return str(row.get("source_format") or "image")


def source_name(row: Mapping[str, Any]) -> str | None:
    """How messages name a row's DICOM source: ``DICOM image of case <id>`` (the case id, never the path, which can
    hold a patient's name); ``None`` for other rows and rows without a case id (messages give the path)."""
    case = str(row.get("case_id") or "")
    return f"DICOM image of case {case}" if case and _source(row) == "dicom" else None


def check_image_size(row: Mapping[str, Any], height: int, width: int) -> None:
    """Warn when an image has a side under :data:`MIN_IMAGE_SIDE` pixels, naming it (a DICOM source by case id)."""
    if min(height, width) >= MIN_IMAGE_SIDE:
        return
    name = source_name(row) or f"image {row['image_path']}"
    if _source(row) == "nifti":  # one message for the whole volume (a warning is shown once per message)
        name = f"a slice of NIfTI volume {row['image_path']}"
    warnings.warn(
        f"{name} is {width}x{height} px, smaller than {MIN_IMAGE_SIDE} px on a side (one model patch): a model "
        "sees almost nothing in it and its score means little; check it is the image you meant, or remove it",
        DataWarning,
        stacklevel=3,
    )


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
        DataError: The file is missing, truncated, not an image (a DICOM RT Dose, SEG...) or needs a missing DICOM
            decoder; a DICOM source is named by case id. An image under :data:`MIN_IMAGE_SIDE` px warns.
    """
    source = _source(row)
    path = Path(str(row["image_path"]))
    if source == "dicom":
        image = read_dicom_frame(path, _frame(row), source_name(row))
    elif source == "nifti":
        image = read_nifti_image(row)
    else:
        image = _plain_image(_read_pil(path, "image", image=True))
    check_image_size(row, int(image.shape[0]), int(image.shape[1]))
    return image


def _plain_image(data: np.ndarray) -> np.ndarray:
    """A decoded plain image as (H, W, 3) float32 in [0, 1] (16-bit greyscale scaled by 65535)."""
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
            image = _open_checked(path, "image", image=True)
            if image.mode not in _HIGH_BIT_MODES:
                width, height = image.size
                check_image_size(row, height, width)
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
    import torch  # here: the manifest-level readers above load no torch

    tensor = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))[None]
    area = torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0]
    return area.permute(1, 2, 0).numpy(), (int(data.shape[0]), int(data.shape[1]))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a binary (H, W) mask to (size, size) float32 {0, 1}, pixel-centre aligned."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return (np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 127).astype(np.float32)


def image_shape(row: Mapping[str, Any]) -> tuple[int, int]:
    """(H, W) of a row's image, read from the header only where the format allows."""
    source = _source(row)
    path = Path(str(row["image_path"]))
    if source == "dicom":
        return dicom_frame_shape(path, source_name(row))
    if source == "nifti":
        return nifti_slice_shape(row)
    try:
        with Image.open(path) as image:
            width, height = image.size
        check_pixel_count(path, width * height)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist; rebuild the manifest or restore the file") from None
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"image {path} cannot be opened ({type(exc).__name__}); it is not an image - remove it"
        ) from None
    return height, width


LABEL_MAP = "label-map"
"""``mask_rule`` of a mask that is a label map (several lesion labels, e.g. BraTS tumour sub-regions): read as
``>0`` (every label is lesion) without the not-binary warning, since several levels are what it holds."""


def binarise(mask: np.ndarray, rule: str) -> np.ndarray:
    """Binarise a mask array with a manifest ``mask_rule`` (``>0``, ``>127`` or ``label-map``); colour masks use
    their max channel."""
    if mask.ndim == 3:
        mask = mask[..., : min(mask.shape[2], 3)].max(axis=2)
    if rule == ">127":
        return mask > 127
    if rule in (">0", "", LABEL_MAP):
        return mask > 0
    raise DataError(f"unknown mask_rule '{rule}' in the manifest; use '>0', '>127' or '{LABEL_MAP}'")


def warn_if_not_binary(mask: np.ndarray, path: Path | str, rule: str = ">0") -> None:
    """Warn (naming the file) when a mask read with the ``>0`` rule holds more than two values - a gradient,
    noise, a photo - so that every non-zero pixel becomes lesion; a two-valued mask (0/1, 0/255) passes silently.
    A ``>127`` rule is a dataset's deliberate choice for noisy (JPEG) masks and is not warned about."""
    if rule not in ("", ">0"):
        return
    flat = mask[..., : min(mask.shape[2], 3)].max(axis=2) if mask.ndim == 3 else mask
    if flat.dtype == np.uint8:
        counts = np.bincount(flat.ravel(), minlength=256)
        levels = np.flatnonzero(counts)
    else:
        levels = np.unique(flat)
    if levels.size > 2:
        warnings.warn(
            f"mask {path} is not binary ({levels.size} distinct values from {levels[0]:g} to {levels[-1]:g}); "
            "binarised at >0 (every non-zero pixel is lesion): check it is a lesion mask, or re-export it as 0/255",
            DataWarning,
            stacklevel=2,
        )


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
        data = _read_pil(path, "mask", image=False)
        rule = str(row.get("mask_rule") or ">0")
        warn_if_not_binary(data, path, rule)
        mask = binarise(data, rule)
    if mask.shape != (height, width):
        name = source_name(row)
        which = f"the mask of {name}" if name else f"mask {path}"
        image = "the image" if name else f"its image {row['image_path']}"
        raise DataError(
            f"{which} is {mask.shape[1]}x{mask.shape[0]} but {image} is {width}x{height}; re-export the mask at the "
            "image size"
        )
    return mask


def _check_plain_image(path: Path, what: str) -> None:
    """Header, pixel limit and a cheap integrity check of a plain image: PNG chunk CRCs up to IEND, a JPEG's
    end-of-image marker; other formats (TIFF, BMP...) are decoded in full."""
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; rebuild the manifest or restore the file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            check_pixel_count(path, width * height, what)
            fmt = image.format
            if fmt == "PNG":
                image.verify()
            elif fmt != "JPEG":
                image.load()
        if fmt == "JPEG":
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - 64))
                if b"\xff\xd9" not in handle.read():
                    raise OSError("no JPEG end-of-image marker (truncated)")
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{what} {path} cannot be decoded ({type(exc).__name__}: {exc}); the file is truncated or not an "
            "image - re-export or remove it"
        ) from None


def check_row(row: Mapping[str, Any]) -> None:
    """Check that a manifest row's image and mask can be read, without decoding every plain image in full.

    Plain images: :func:`_check_plain_image`. DICOM: the header and its pixel attributes (uncompressed pixel data
    must have the length the header gives; compressed frames are decoded). NIfTI: the volume is read (once per
    file). The mask is read as training reads it.

    Raises:
        DataError: naming the unreadable file.
    """
    source = _source(row)
    path = Path(str(row["image_path"]))
    if source == "image":
        _check_plain_image(path, "image")
    elif source == "dicom":
        from medad.data.dicom import check_pixel_header, read_header

        ds = read_header(path, source_name(row))
        check_pixel_header(ds, path, source_name(row))
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
        if pydicom.uid.UID(syntax).is_compressed:
            read_dicom_frame(path, _frame(row), source_name(row))
    else:
        read_nifti_image(row)
    if row.get("mask_path"):
        read_mask(row)


def check_files(manifest: pd.DataFrame, what: str = "training") -> None:
    """Refuse a manifest with any unreadable image or mask before work starts (one check per distinct file).

    Raises:
        DataError: listing up to five bad files with their reasons, and how many there are.
    """
    problems: list[str] = []
    seen: set[tuple[str, str, int]] = set()
    for row in manifest.to_dict("records"):
        key = (str(row["image_path"]), str(row.get("mask_path") or ""), _frame(row))
        if _source(row) == "nifti":
            key = (key[0], key[1], 0)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_row(row)
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        shown = "; ".join(problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise DataError(
            f"{len(problems)} {what} file(s) cannot be read, so {what} did not start: {shown}{more}; fix or remove "
            "them (`medad datasets check` lists all)"
        )
