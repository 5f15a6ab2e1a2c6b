"""Source images as the exporters need them: native size, display pixels and physical geometry.

The exporters read the source files named in the manifest directly (PIL for plain images, pydicom for
DICOM, nibabel for NIfTI) so that geometry comes from the file itself, never from a resized copy.

Conventions:
    * a NIfTI row's 2-D image is ``np.take(volume, frame, axis=slice_axis)``, read as (H, W);
    * a DICOM row's 2-D image is frame ``frame`` (0-based) of the file's pixel data, (Rows, Columns);
    * affines are RAS+ (NIfTI convention); DICOM LPS+ positions are converted by negating x and y.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from nibabel.dataobj_images import DataobjImage
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medad.errors import ExportError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: PIL modes of greyscale images with more than 8 bits per pixel (16-bit PNG reads as "I;16" or "I").
HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _frame(row: Mapping[str, Any]) -> int:
    value = row.get("frame")
    return 0 if value is None or value is np.nan or _isna(value) else int(value)


def _isna(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return value is None or str(value) == "<NA>"


def load_nifti(path: Path) -> DataobjImage:
    """Open the source image of a ``nifti`` manifest row (header and lazy pixel data) with nibabel.

    Raises:
        ExportError: if nibabel reads the file as an image without pixel data (e.g. a surface).
    """
    image = nib.load(path)
    if not isinstance(image, DataobjImage):
        raise ExportError(
            f"a source marked source_format nifti is a {type(image).__name__}, not an image volume; "
            "convert it to .nii/.nii.gz or fix the manifest's source_format"
        )
    return image


def source_shape(row: Mapping[str, Any], case: str) -> tuple[int, int]:
    """Return the native (H, W) of a manifest row's image without decoding its pixels.

    Raises:
        ExportError: if the source cannot be read.
    """
    fmt, path = row["source_format"], Path(str(row["image_path"]))
    try:
        if fmt == "dicom":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        if fmt == "nifti":
            shape = list(load_nifti(path).shape)
            if len(shape) == 3:
                del shape[int(row["slice_axis"]) if not _isna(row.get("slice_axis")) else 2]
            return int(shape[0]), int(shape[1])
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError, pydicom.errors.InvalidDicomError, AttributeError) as exc:
        raise ExportError(
            f"cannot read the source image of {case} ({type(exc).__name__}); check that the "
            "manifest's image_path still points to a readable file"
        ) from None


#: Percentiles of the robust display window of images without a stored window (16-bit PNG, float NIfTI,
#: DICOM without a VOI window): values below the low one show black, above the high one white.
DISPLAY_PERCENTILES = (0.5, 99.5)


def _normalise(arr: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (for values already windowed, e.g. by a DICOM VOI LUT)."""
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    return np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)


def robust_window(arr: np.ndarray) -> np.ndarray:
    """Window to [0, 1] between the :data:`DISPLAY_PERCENTILES` of the finite values (min-max if they coincide).

    Used for display of high-bit-depth or float images that carry no window of their own, so that a few extreme
    pixels (or an unused 16-bit range) do not turn the picture all black or all white.
    """
    arr = np.asarray(arr, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return np.zeros_like(arr)
    lo, hi = (float(v) for v in np.percentile(finite, DISPLAY_PERCENTILES))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros_like(arr)
    return np.clip((np.nan_to_num(arr, nan=lo) - lo) / (hi - lo), 0.0, 1.0)


def dicom_display(ds: pydicom.Dataset, frame: int) -> np.ndarray:
    """Return one DICOM frame as display values in [0, 1], (H, W) grey or (H, W, 3) colour.

    Grey pipeline: modality LUT (rescale), then the file's VOI LUT / window when present (else the robust
    percentile window of :func:`robust_window`), then MONOCHROME1 inversion last, as PS3.3 defines
    MONOCHROME1 after the VOI transform.
    """
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    if arr.ndim == 3:
        return arr / 255.0 if arr.dtype == np.uint8 else robust_window(arr)
    arr = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = _normalise(apply_voi_lut(arr, ds, index=0))
    else:
        arr = robust_window(arr)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = 1.0 - arr
    return arr


def display_image(row: Mapping[str, Any]) -> np.ndarray:
    """Return the row's image for display: float in [0, 1], (H, W) grey or (H, W, 3) RGB.

    8-bit images are shown as stored; 16-bit / 32-bit / float PNG or TIFF images and NIfTI slices get the
    robust percentile window (:func:`robust_window`); DICOM frames their VOI window (see :func:`dicom_display`).
    """
    fmt, path = row["source_format"], Path(str(row["image_path"]))
    if fmt == "dicom":
        return dicom_display(pydicom.dcmread(path), _frame(row))
    if fmt == "nifti":
        vol = np.asanyarray(load_nifti(path).dataobj)
        if vol.ndim == 2:
            return robust_window(vol)
        axis = int(row["slice_axis"]) if not _isna(row.get("slice_axis")) else 2
        return robust_window(np.take(vol, _frame(row), axis=axis))
    with Image.open(path) as img:
        if img.mode in HIGH_BIT_MODES:
            return robust_window(np.asarray(img))
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


@dataclass
class DicomGeometry:
    """Physical geometry of a DICOM file's frames (LPS+, millimetres).

    Attributes:
        row_cosine: direction of increasing column index (IOP[0:3]).
        col_cosine: direction of increasing row index (IOP[3:6]).
        spacing: (row spacing, column spacing) = PixelSpacing.
        positions: (n_frames, 3) ImagePositionPatient of each frame.
        slice_step: LPS vector from one frame to the next (or the slice normal times thickness).
    """

    row_cosine: np.ndarray
    col_cosine: np.ndarray
    spacing: tuple[float, float]
    positions: np.ndarray
    slice_step: np.ndarray

    def affine_ras(self) -> np.ndarray:
        """Return the 4x4 RAS affine of the volume ``data[column, row, frame]``."""
        lps = np.eye(4)
        lps[:3, 0] = self.row_cosine * self.spacing[1]
        lps[:3, 1] = self.col_cosine * self.spacing[0]
        lps[:3, 2] = self.slice_step
        lps[:3, 3] = self.positions[0]
        return LPS_TO_RAS @ lps


GEOMETRY_KEYWORDS = ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def dicom_geometry(ds: pydicom.Dataset) -> DicomGeometry | None:
    """Return the geometry of a classic (single- or legacy multi-frame) or enhanced DICOM image.

    Returns None for images without a patient coordinate system (e.g. ultrasound, secondary capture).
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if shared is not None and per_frame is not None:
        sh = shared[0]
        if "PlaneOrientationSequence" not in sh or "PixelMeasuresSequence" not in sh:
            return None
        iop = [float(v) for v in sh.PlaneOrientationSequence[0].ImageOrientationPatient]
        spacing = [float(v) for v in sh.PixelMeasuresSequence[0].PixelSpacing]
        positions = np.array(
            [[float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] for item in per_frame]
        )
        thickness = float(sh.PixelMeasuresSequence[0].get("SliceThickness", 1.0) or 1.0)
    else:
        if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds or "PixelSpacing" not in ds:
            return None
        iop = [float(v) for v in ds.ImageOrientationPatient]
        spacing = [float(v) for v in ds.PixelSpacing]
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        normal = np.cross(iop[:3], iop[3:])
        offsets = [float(v) for v in ds.get("GridFrameOffsetVector", [])] or [0.0]
        if n > 1 and len(offsets) != n:
            return None
        positions = np.array([ipp + (o - offsets[0]) * normal for o in offsets])
        thickness = float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 1.0)) or 1.0)
    row_c, col_c = np.array(iop[:3]), np.array(iop[3:])
    step = positions[1] - positions[0] if len(positions) > 1 else np.cross(row_c, col_c) * thickness
    return DicomGeometry(row_c, col_c, (spacing[0], spacing[1]), positions, step)
