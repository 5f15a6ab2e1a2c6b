"""Multi-slice DICOM series written with pydicom for the series tests: oblique, shuffled names and numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

OBLIQUE_IOP = (0.8660254, 0.5, 0.0, 0.0, 0.0, -1.0)
"""Row cosine 30 degrees off the x axis, column cosine towards the feet: an oblique coronal-like plane."""
PATIENT_NAME, PATIENT_ID = "Series^Canary", "SERIESCANARY7"


def slice_pixels(k: int, shape: tuple[int, int]) -> np.ndarray:
    """Slice ``k``'s stored values: a ramp plus ``k`` so every slice differs (uint16)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy * 7 + xx * 3 + 100 * k).astype(np.uint16)


def write_series(
    folder: Path,
    n: int = 5,
    *,
    shape: tuple[int, int] = (12, 10),
    iop: Sequence[float] = OBLIQUE_IOP,
    origin: Sequence[float] = (-20.0, 15.0, 40.0),
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    step: float = 2.5,
    missing: Sequence[int] = (),
    sizes: dict[int, tuple[int, int]] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write slices 0..n-1 of one series (slice ``k`` at ``origin + k * step * normal``) under shuffled file names
    and shuffled InstanceNumbers; slices in ``missing`` are left out, ``sizes`` overrides a slice's (rows, cols).

    Returns the files in slice order (position along the normal), the missing ones left out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kept = [k for k in range(n) if k not in set(missing)]
    names = rng.permutation(len(kept))
    numbers = rng.permutation(len(kept)) + 1
    normal = np.cross(iop[:3], iop[3:])
    study, series, forum = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for j, k in enumerate(kept):
        shape_k = (sizes or {}).get(k, shape)
        position = np.asarray(origin, dtype=float) + k * step * normal
        ds = _slice(shape_k, position, iop, pixel_spacing, step, (study, series, forum))
        ds.InstanceNumber = int(numbers[j])
        ds.PixelData = slice_pixels(k, shape_k).tobytes()
        path = folder / f"img{int(names[j]):03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice(
    shape: tuple[int, int],
    position: np.ndarray,
    iop: Sequence[float],
    pixel_spacing: tuple[float, float],
    thickness: float,
    uids: tuple[str, str, str],
) -> FileDataset:
    """One CT Image Storage slice with geometry and the Patient / Study / Series / Equipment modules."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, PATIENT_ID, "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber = "", "CT", 3
    ds.Manufacturer, ds.PositionReferenceIndicator = "medad-tests", ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.7f}" for v in iop]
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.SliceThickness = f"{thickness:g}"
    ds.KVP, ds.AcquisitionNumber = "120", 1
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def enhanced_from(paths: Sequence[Path], out: Path) -> Path:
    """One Legacy Converted Enhanced CT object (highdicom) made from single-frame CT slices, frames in the
    order given; a real enhanced multi-frame object with per-frame functional groups."""
    import highdicom as hd

    sources = [pydicom.dcmread(p) for p in paths]
    obj = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=sources, series_instance_uid=generate_uid(), series_number=9,
        sop_instance_uid=generate_uid(), instance_number=1,
    )  # fmt: skip
    obj.save_as(out, enforce_file_format=True)
    return out
