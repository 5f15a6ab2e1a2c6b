"""NIfTI input: one manifest row per slice along a chosen axis; the affine stays retrievable for export.

A slice keeps the array order nibabel gives (the two remaining voxel axes become rows and columns), so a map
predicted on it goes back into the volume at the same place; :func:`slice_affine` returns the 4x4 matrix that
maps (row, column) of that slice to world (RAS+) coordinates.

A volume is read from disk once per process (a small cache keyed by path, size and modification time) and its
intensity range is computed once, so scoring N slices costs N, not N squared, volume reads. NaN or infinite
voxels are replaced by the volume's smallest finite value with a :class:`~medad.errors.DataWarning` naming the
file; a volume with no finite voxel is a DataError.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.spatialimages import SpatialImage

from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.manifest import ManifestBuilder, holds_only, is_ignored, normalise_stem, require_dir
from medad.errors import DataError, DataWarning
from medad.utils.privacy import case_id

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` has a NIfTI suffix (``.nii`` or ``.nii.gz``)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _load(path: Path) -> SpatialImage:
    try:
        loaded = nib.load(str(path))
    except (FileNotFoundError, nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"NIfTI file {path} cannot be read ({type(exc).__name__}); it is truncated or not NIfTI - re-export it"
        ) from None
    if not isinstance(loaded, SpatialImage):  # what a .nii holds; nibabel's loader is typed for any image file
        raise DataError(f"file {path} is a {type(loaded).__name__}, not a NIfTI volume; re-export it as .nii")
    image = loaded
    if len(image.shape) < 2 or len(image.shape) > 3:
        raise DataError(f"NIfTI file {path} has shape {image.shape}; medad reads 2D or 3D volumes only")
    return image


@dataclass(frozen=True)
class Volume:
    """A NIfTI volume's voxels as float32 (non-finite voxels replaced) and its finite intensity range."""

    data: np.ndarray
    low: float
    high: float
    replaced: int = 0


def load_volume(path: str | Path) -> Volume:
    """The whole volume of a NIfTI file with its range, read once per process while the file is unchanged."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError:
        _load(path)  # raises the DataError naming the missing file
        raise
    volume = _cached_volume(str(path), info.st_size, info.st_mtime_ns)
    if volume.replaced:
        warnings.warn(
            f"NIfTI file {path} has {volume.replaced} NaN or infinite voxel(s); they were replaced by the volume's "
            f"minimum {volume.low:g} - check the export that wrote it",
            DataWarning,
            stacklevel=2,
        )
    return volume


@functools.lru_cache(maxsize=2)
def _cached_volume(path: str, size: int, mtime_ns: int) -> Volume:
    """Read and repair one volume (``size`` and ``mtime_ns`` only key the cache: an edited file is re-read)."""
    image = _load(Path(path))
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, MemoryError) as exc:
        raise DataError(
            f"NIfTI file {path} voxel data cannot be read ({type(exc).__name__}); it is truncated - re-export it"
        ) from None
    finite = np.isfinite(data)
    if not finite.any():
        raise DataError(f"NIfTI file {path} has no finite voxel (all NaN or infinite); re-export it")
    low, high = float(data[finite].min()), float(data[finite].max())
    bad = int(finite.size - np.count_nonzero(finite))
    if bad:
        data = np.where(finite, data, np.float32(low))
    data.setflags(write=False)
    return Volume(data, low, high, bad)


def volume_affine(path: str | Path) -> np.ndarray:
    """The 4x4 voxel-to-world (RAS+) affine of a NIfTI file."""
    return np.asarray(_load(Path(path)).affine, dtype=np.float64)


def _axis_and_index(row: Mapping[str, Any]) -> tuple[int, int]:
    axis, frame = row.get("slice_axis"), row.get("frame")
    axis = 2 if axis is None or pd.isna(axis) or int(axis) < 0 else int(axis)
    frame = 0 if frame is None or pd.isna(frame) or int(frame) < 0 else int(frame)
    return axis, frame


def slice_affine(row: Mapping[str, Any]) -> np.ndarray:
    """4x4 affine mapping (row, column, 0) of a manifest row's slice to world coordinates.

    Columns 0 and 1 are the volume's remaining axes in order; column 2 is the slicing axis, and the
    translation includes the slice offset, so ``slice_affine(row) @ [r, c, 0, 1]`` equals
    ``volume_affine @ voxel`` for the voxel that pixel came from.
    """
    path = Path(str(row["image_path"]))
    affine = volume_affine(path)
    axis, index = _axis_and_index(row)
    if len(_load(path).shape) == 2:
        return affine
    remaining = [a for a in range(3) if a != axis]
    out = np.eye(4)
    out[:3, 0] = affine[:3, remaining[0]]
    out[:3, 1] = affine[:3, remaining[1]]
    out[:3, 2] = affine[:3, axis]
    out[:3, 3] = affine[:3, 3] + affine[:3, axis] * index
    return out


def read_nifti_slice(path: str | Path, axis: int, index: int) -> np.ndarray:
    """One 2D slice of a NIfTI volume as float32, from the volume cached by :func:`load_volume`."""
    return _slice(load_volume(path).data, path, axis, index)


def _slice(volume: np.ndarray, path: str | Path, axis: int, index: int) -> np.ndarray:
    if volume.ndim == 2:
        return volume
    if not 0 <= index < volume.shape[axis]:
        raise DataError(f"NIfTI file {path} has {volume.shape[axis]} slices on axis {axis}; slice {index} was asked")
    slicer: list[Any] = [slice(None)] * 3
    slicer[axis] = index
    return np.ascontiguousarray(volume[tuple(slicer)])


def read_nifti_image(row: Mapping[str, Any]) -> np.ndarray:
    """A row's slice as an (H, W, 3) float32 image in [0, 1] (min-max over the whole volume's finite voxels)."""
    from medad.data.readers import check_pixel_count

    path = Path(str(row["image_path"]))
    axis, index = _axis_and_index(row)
    volume = load_volume(path)
    data = _slice(volume.data, path, axis, index)
    check_pixel_count(path, data.size, "NIfTI file")
    low, high = volume.low, volume.high
    gray = np.zeros_like(data) if high <= low else np.clip((data - low) / (high - low), 0, 1)
    return np.repeat(gray.astype(np.float32)[..., None], 3, axis=2)


def read_nifti_mask(row: Mapping[str, Any]) -> np.ndarray:
    """A row's mask slice (from its mask volume) binarised ``>0``."""
    axis, index = _axis_and_index(row)
    return read_nifti_slice(Path(str(row["mask_path"])), axis, index) > 0


def nifti_slice_shape(row: Mapping[str, Any]) -> tuple[int, int]:
    """(H, W) of a row's slice without reading voxel data."""
    shape = _load(Path(str(row["image_path"]))).shape
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    axis, _ = _axis_and_index(row)
    rest = [int(s) for a, s in enumerate(shape) if a != axis]
    return rest[0], rest[1]


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return normalise_stem(name, ("_mask", "_seg", "_label"))


def make_nifti(
    root: str | Path,
    split: str = "test",
    axis: int = 2,
    masks: str | Path | None = None,
    class_name: str = "object",
    strict: bool = True,
) -> pd.DataFrame:
    """Manifest of NIfTI volumes: one row per slice along ``axis``.

    Args:
        root: A ``.nii``/``.nii.gz`` file or a folder of them.
        split: Split name written in the manifest.
        axis: Voxel axis to slice along (0, 1 or 2).
        masks: Optional folder of mask volumes with the same stem (``_mask``/``_seg``/``_label`` suffix
            allowed); a slice is labelled 1 if its mask slice has any voxel > 0, else 0. Without masks labels
            are unknown.
        class_name: Class word for every row.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (``source_format="nifti"``, ``frame`` = slice index, ``slice_axis`` = ``axis``).
    """
    root = Path(root).expanduser()
    if axis not in (0, 1, 2):
        raise DataError(f"NIfTI slice axis must be 0, 1 or 2, not {axis}")
    if root.is_file():
        files = [root]
        base = root.parent
    else:
        require_dir(root, "NIfTI folder")
        files = sorted(p for p in root.iterdir() if p.is_file() and not is_ignored(p) and is_nifti(p))
        base = root
    mask_by_stem: dict[str, Path] = {}
    if masks is not None:
        mask_dir = require_dir(Path(masks).expanduser(), "NIfTI mask folder")
        mask_by_stem = {_nifti_stem(p): p for p in mask_dir.iterdir() if p.is_file() and is_nifti(p)}
    builder = ManifestBuilder("nifti", base, split, "nifti")
    for path in files:
        try:
            image = _load(path)
        except DataError as exc:
            builder.problem(path, str(exc).replace(f"NIfTI file {path} ", ""))
            continue
        shape = image.shape
        n_slices = 1 if len(shape) == 2 else int(shape[axis])
        mask_path = mask_by_stem.get(_nifti_stem(path))
        labels: list[int | None] = [None] * n_slices
        if masks is not None:
            if mask_path is None:
                builder.problem(path, f"has no mask volume with the same stem in {masks}; add it or remove the image")
                continue
            mask = np.asarray(_load(mask_path).dataobj)
            if mask.shape != shape:
                builder.problem(
                    mask_path, f"has shape {mask.shape} but its image {path} has {shape}; re-export the mask"
                )
                continue
            other = tuple(a for a in range(mask.ndim) if a != axis) if mask.ndim == 3 else (0, 1)
            flags = np.asarray((mask > 0).any(axis=other)) if mask.ndim == 3 else np.array([(mask > 0).any()])
            labels = [int(f) for f in flags]
        group = case_id(f"volume/{path.name}")
        for index in range(n_slices):
            builder.add(
                path,
                class_name=class_name,
                label=labels[index],
                mask_path=mask_path,
                group_id=group,
                source_format="nifti",
                frame=index,
                slice_axis=axis if len(shape) == 3 else None,
            )
    return builder.build(strict)


register_dataset(
    DatasetDescription(
        name="nifti",
        make=make_nifti,
        detectors=(
            Detector(102, "a NIfTI file", lambda r: r.is_file() and is_nifti(r)),
            Detector(120, "folder of NIfTI files", lambda r: holds_only(r, is_nifti)),
        ),
    )
)
