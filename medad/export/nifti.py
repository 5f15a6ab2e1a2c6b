"""NIfTI exports: a uint8 mask and a float32 heatmap in the source's geometry.

NIfTI sources keep their own affine and voxel grid (unscored slices are zero). DICOM sources become a volume
``data[column, row, frame]`` with the affine built from ImagePositionPatient / ImageOrientationPatient /
PixelSpacing and converted from DICOM LPS+ to NIfTI RAS+. DICOM images with no patient coordinate system get
the affine ``diag(-1, -1, 1)`` (1 mm pixels), which displays them unflipped in RAS viewers.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np

from medad.utils.io import write_bytes_atomic

NO_GEOMETRY_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_frames_to_volume(frames: np.ndarray) -> np.ndarray:
    """Turn DICOM-ordered frames (n, rows, columns) into NIfTI order (columns, rows, n)."""
    return np.ascontiguousarray(np.transpose(frames, (2, 1, 0)))


def _write(data: np.ndarray, affine: np.ndarray, code: int, path: Path, intent: str) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    img.header.set_intent(intent)
    img.header["descrip"] = b"medad RESEARCH USE ONLY"
    raw = io.BytesIO()
    file_map = img.make_file_map({"image": raw, "header": raw})
    img.to_file_map(file_map)
    write_bytes_atomic(path, gzip.compress(raw.getvalue(), mtime=0))


def write_nifti_pair(
    mask: np.ndarray, heatmap: np.ndarray, affine: np.ndarray, code: int, mask_path: Path, heatmap_path: Path
) -> None:
    """Write a uint8 mask (0/1) and a float32 heatmap with the same affine and q/sform code.

    Args:
        mask: boolean volume.
        heatmap: float volume of the same shape.
        affine: 4x4 RAS affine.
        code: NIfTI xform code (1 scanner, 2 aligned, ...).
        mask_path: ``.nii.gz`` path of the mask.
        heatmap_path: ``.nii.gz`` path of the heatmap.
    """
    _write(mask.astype(np.uint8), affine, code, mask_path, "label")
    _write(heatmap.astype(np.float32), affine, code, heatmap_path, "estimate")
