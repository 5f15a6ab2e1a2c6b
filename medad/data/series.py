"""Volumes: the manifest rows that make one 3-D image (a DICOM series, an enhanced multi-frame object, a NIfTI file).

A manifest has one row per 2-D image (a DICOM frame, a NIfTI slice). Export and volume-level evaluation need the
rows grouped back into volumes, in physical order:

* **DICOM series** (``dicom-series``): single-frame files sharing a SeriesInstanceUID, ordered by their position
  along the slice normal (ImagePositionPatient projected on the cross product of the ImageOrientationPatient
  cosines), never by file name or InstanceNumber;
* **DICOM multi-frame** (``dicom-multiframe``): one file with several frames, ordered the same way from its
  per-frame functional groups (enhanced objects) or from GridFrameOffsetVector (legacy multi-frame);
* **NIfTI** (``nifti``): one file, its slices along the manifest's slice axis.

A volume whose slices do not make a regular grid names each problem (a gap, duplicate positions, mixed
orientations, sizes or pixel spacings, missing geometry, slices not stacked along their normal); exporters then
fall back to one object per file. Geometry follows ITK / SimpleITK: spacing (column, row, slice) in mm, origin
and direction in DICOM patient coordinates (LPS+), for the voxel array ``data[column, row, slice]``;
:meth:`Volume.affine` is the matching NIfTI (RAS+) affine. Volume ids are keyed hashes like case ids: no UID or
path appears in clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from medad.utils.privacy import case_id

VolumeKind = Literal["dicom-series", "dicom-multiframe", "nifti"]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates (LPS+) to NIfTI world coordinates (RAS+), and back (it is its own inverse)."""
ORIENTATION_TOLERANCE = 1e-4
"""Largest difference of two direction cosines still counted as the same orientation."""
POSITION_TOLERANCE_MM = 1e-3
"""Positions closer than this along the normal are duplicates; steps may differ by this plus 1 % of the step."""
_GEOMETRY_HINT = "they are exported one object per file"


@dataclass(frozen=True)
class Volume:
    """One volume of a manifest.

    Attributes:
        volume_id: pseudonymous id (``volume-`` + 12 hex digits), a keyed hash of the series / file.
        indices: manifest indices, ordered along the slice normal (slice 0 first).
        kind: ``dicom-series``, ``dicom-multiframe`` or ``nifti``.
        problems: why the slices do not make one regular grid (empty when they do), each named.
        size: (columns, rows, slices) of the voxel array ``data[column, row, slice]`` (a NIfTI file: its own
            array shape, its geometry that of the file's affine).
        spacing: (column, row, slice) spacing in mm; ``None`` without a patient coordinate system.
        origin: LPS position (mm) of voxel (0, 0, 0); ``None`` without a patient coordinate system.
        direction: 3x3 direction cosines, row-major as SimpleITK's ``GetDirection()`` (columns: the directions
            of increasing column, row and slice index); ``None`` without a patient coordinate system.
    """

    volume_id: str
    indices: tuple[int, ...]
    kind: VolumeKind
    problems: tuple[str, ...] = ()
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    origin: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None

    @property
    def regular(self) -> bool:
        """Whether the slices make one regular grid (no problems), so the volume can be exported as one."""
        return not self.problems

    def affine(self) -> np.ndarray | None:
        """The 4x4 RAS+ affine of ``data[column, row, slice]`` (``None`` without geometry)."""
        if self.spacing is None or self.origin is None or self.direction is None:
            return None
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(self.direction, dtype=np.float64).reshape(3, 3) * np.asarray(self.spacing)
        lps[:3, 3] = self.origin
        return LPS_TO_RAS @ lps


@dataclass
class _Plane:
    """The geometry of one manifest row's 2-D image (None where the header has none)."""

    index: int
    size: tuple[int, int]  # (rows, columns)
    position: np.ndarray | None = None  # LPS, mm
    orientation: np.ndarray | None = None  # 6 cosines: row direction, then column direction
    pixel_spacing: tuple[float, float] | None = None  # (between rows, between columns)
    frame_of_reference: str = ""
    thickness: float | None = None


def volume_key(kind: str, key: str) -> str:
    """The pseudonymous volume id of a source key (a series UID, a file): ``volume-`` + 12 hex digits."""
    return "volume-" + case_id(f"{kind}/{key}", salt="volume").removeprefix("case-")


def _floats(value: Any, count: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (count,) and np.isfinite(out).all() else None


def _item(ds: Any, sequence: str, keyword: str) -> Any:
    """``ds.<sequence>[0].<keyword>`` or None."""
    seq = ds.get(sequence) if ds is not None else None
    return seq[0].get(keyword) if seq else None


def _enhanced_planes(ds: pydicom.Dataset, frames: list[tuple[int, int]], size: tuple[int, int]) -> list[_Plane]:
    """Planes of an enhanced multi-frame object's frames from its shared and per-frame functional groups."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    forum = str(ds.get("FrameOfReferenceUID", "") or "")
    planes = []
    for index, frame in frames:
        item = per_frame[frame] if frame < len(per_frame) else None
        groups = [g for g in (item, shared) if g is not None]

        def first(sequence: str, keyword: str, groups: list[Any] = groups) -> Any:
            return next((v for g in groups if (v := _item(g, sequence, keyword)) is not None), None)

        spacing = _floats(first("PixelMeasuresSequence", "PixelSpacing") or (), 2)
        thickness = first("PixelMeasuresSequence", "SpacingBetweenSlices") or first(
            "PixelMeasuresSequence", "SliceThickness"
        )
        planes.append(
            _Plane(
                index,
                size,
                _floats(first("PlanePositionSequence", "ImagePositionPatient") or (), 3),
                _floats(first("PlaneOrientationSequence", "ImageOrientationPatient") or (), 6),
                (float(spacing[0]), float(spacing[1])) if spacing is not None else None,
                forum,
                _positive(thickness),
            )
        )
    return planes


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _classic_planes(ds: pydicom.Dataset, frames: list[tuple[int, int]], size: tuple[int, int]) -> list[_Plane]:
    """Planes of a single-frame or legacy multi-frame image (frames offset by GridFrameOffsetVector)."""
    position = _floats(ds.get("ImagePositionPatient") or (), 3)
    orientation = _floats(ds.get("ImageOrientationPatient") or (), 6)
    spacing = _floats(ds.get("PixelSpacing") or (), 2)
    offsets = _floats(ds.get("GridFrameOffsetVector") or (), len(ds.get("GridFrameOffsetVector") or ()))
    thickness = _positive(ds.get("SpacingBetweenSlices")) or _positive(ds.get("SliceThickness"))
    forum = str(ds.get("FrameOfReferenceUID", "") or "")
    normal = np.cross(orientation[:3], orientation[3:]) if orientation is not None else None
    pixel = (float(spacing[0]), float(spacing[1])) if spacing is not None else None
    planes = []
    for index, frame in frames:
        where = position if frame == 0 else None
        if position is not None and normal is not None and offsets is not None and frame < len(offsets):
            where = position + (offsets[frame] - offsets[0]) * normal
        planes.append(_Plane(index, size, where, orientation, pixel, forum, thickness))
    return planes


def _frame(value: Any) -> int:
    return 0 if value is None or pd.isna(value) else int(value)


def _read(path: str) -> pydicom.Dataset | None:
    """A DICOM file's header (pixels not read), or None when it cannot be read."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _frames_count(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _dicom_volumes(rows: pd.DataFrame) -> list[Volume]:
    """Volumes of the DICOM rows: single-frame files by series, each multi-frame file on its own."""
    series: dict[str, list[_Plane]] = {}
    volumes: list[Volume] = []
    for path, group in rows.groupby("image_path", sort=False):
        frames = [(int(i), _frame(f)) for i, f in zip(group.index, group["frame"], strict=True)]
        ds = _read(str(path))
        if ds is None:
            volumes.append(
                Volume(volume_key("dicom-file", str(path)), tuple(i for i, _ in frames), "dicom-multiframe",
                       ("the DICOM header cannot be read",))
            )  # fmt: skip
            continue
        size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
        planes = (_enhanced_planes if enhanced else _classic_planes)(ds, frames, size)
        if _frames_count(ds) > 1:
            key = str(ds.get("SOPInstanceUID", "") or path)
            volumes.append(_build(volume_key("dicom-multiframe", key), "dicom-multiframe", planes))
        else:
            uid = str(ds.get("SeriesInstanceUID", "") or f"file:{path}")
            series.setdefault(uid, []).extend(planes)
    volumes.extend(_build(volume_key("dicom-series", uid), "dicom-series", planes) for uid, planes in series.items())
    return volumes


def _order(planes: Sequence[_Plane], normal: np.ndarray | None) -> list[_Plane]:
    """Planes sorted by position along ``normal`` (stable: manifest order where positions are unknown)."""
    if normal is None or any(p.position is None for p in planes):
        return list(planes)
    return sorted(planes, key=lambda p: float(np.dot(p.position, normal)))  # type: ignore[arg-type]


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _layout_problems(planes: Sequence[_Plane]) -> list[str]:
    """Problems that need no positions: sizes, orientations, pixel spacings, frames of reference, missing data."""
    problems = []
    sizes = _distinct(p.size for p in planes)
    if len(sizes) > 1:
        problems.append("mixed sizes (" + ", ".join(f"{r}x{c}" for r, c in sizes[:4]) + " rows x columns)")
    missing = sum(p.position is None or p.orientation is None or p.pixel_spacing is None for p in planes)
    if missing and len(planes) > 1:
        problems.append(
            f"no ImagePositionPatient / ImageOrientationPatient / PixelSpacing in {missing} of {len(planes)} "
            "slices: their order in space is unknown"
        )
    orientations = [p.orientation for p in planes if p.orientation is not None]
    if orientations and np.ptp(np.stack(orientations), axis=0).max() > ORIENTATION_TOLERANCE:
        problems.append("mixed orientations (ImageOrientationPatient differs between slices)")
    spacings = [p.pixel_spacing for p in planes if p.pixel_spacing is not None]
    if spacings and np.ptp(np.array(spacings), axis=0).max() > ORIENTATION_TOLERANCE:
        problems.append("mixed pixel spacings (PixelSpacing differs between slices)")
    if len(_distinct(p.frame_of_reference for p in planes)) > 1:
        problems.append("mixed frames of reference (FrameOfReferenceUID differs between slices)")
    return problems


def _spacing_problems(distances: np.ndarray) -> list[str]:
    """Duplicates, gaps and uneven steps among sorted positions along the normal (mm)."""
    steps = np.diff(distances)
    if not steps.size:
        return []
    problems = []
    duplicates = int(np.count_nonzero(steps < POSITION_TOLERANCE_MM))
    if duplicates:
        problems.append(f"duplicates: {duplicates} slice(s) at the position of another slice")
    steps = steps[steps >= POSITION_TOLERANCE_MM]
    if not steps.size:
        return problems
    step = float(steps.min())  # a missing slice doubles one step: the smallest step is the series' own
    uneven = np.abs(steps - step) > POSITION_TOLERANCE_MM + 0.01 * step
    if uneven.any():
        largest = float(steps.max())
        if largest > 1.5 * step:
            missing = round(largest / step) - 1
            problems.append(
                f"a gap of {largest:.4g} mm between two slices where the others are {step:.4g} mm apart "
                f"(about {missing} missing slice(s))"
            )
        else:
            problems.append(f"uneven slice spacing ({float(steps.min()):.4g} to {largest:.4g} mm)")
    return problems


def _shear_problem(ordered: Sequence[_Plane], normal: np.ndarray) -> list[str]:
    """Slices whose positions move within the image plane (gantry tilt, shear) do not make a grid."""
    first = ordered[0].position
    for plane in ordered[1:]:
        offset = plane.position - first  # type: ignore[operator]
        in_plane = offset - np.dot(offset, normal) * normal
        if float(np.linalg.norm(in_plane)) > POSITION_TOLERANCE_MM + 1e-3 * float(np.linalg.norm(offset)):
            return ["slices not stacked along their normal (gantry tilt or shear)"]
    return []


def _build(volume_id: str, kind: VolumeKind, planes: Sequence[_Plane]) -> Volume:
    """The volume of ``planes``: ordered along the normal, with its problems and (when regular) its geometry."""
    problems = _layout_problems(planes)
    first = planes[0]
    complete = all(p.position is not None and p.orientation is not None and p.pixel_spacing is not None for p in planes)
    normal = np.cross(first.orientation[:3], first.orientation[3:]) if complete else None  # type: ignore[index]
    ordered = _order(planes, normal)
    indices = tuple(p.index for p in ordered)
    rows, columns = first.size
    size = (columns, rows, len(planes))
    if normal is None:
        return Volume(volume_id, indices, kind, tuple(problems), size)
    distances = np.array([float(np.dot(p.position, normal)) for p in ordered])  # type: ignore[arg-type]
    problems += _spacing_problems(distances) + _shear_problem(ordered, normal)
    steps = np.diff(distances)
    step = float(np.median(steps)) if steps.size else (first.thickness or 1.0)
    orientation = first.orientation
    direction = np.column_stack([orientation[:3], orientation[3:], normal])  # type: ignore[index]
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], step if step > 0 else 1.0)  # type: ignore[index]
    origin = tuple(float(v) for v in ordered[0].position)  # type: ignore[union-attr]
    return Volume(
        volume_id,
        indices,
        kind,
        tuple(problems),
        size,
        (float(spacing[0]), float(spacing[1]), float(spacing[2])),
        (origin[0], origin[1], origin[2]),
        tuple(float(v) for v in direction.reshape(-1)),
    )


def _nifti_volumes(rows: pd.DataFrame) -> list[Volume]:
    """One volume per NIfTI file and slice axis: slices in index order, geometry from the file's affine."""
    volumes = []
    axes = rows["slice_axis"] if "slice_axis" in rows.columns else pd.Series(pd.NA, index=rows.index)
    for (path, axis), group in rows.groupby([rows["image_path"], axes.fillna(-1)], sort=False):
        order = sorted(zip(group["frame"].map(_frame), group.index, strict=True))
        indices = tuple(int(i) for _, i in order)
        volume_id = volume_key("nifti", f"{Path(str(path)).resolve()}#{int(axis)}")
        try:
            image = nib.load(str(path))
            affine = np.asarray(image.affine, dtype=np.float64)  # type: ignore[attr-defined]
            shape = tuple(int(v) for v in image.shape)  # type: ignore[attr-defined]
        except (OSError, ValueError, EOFError, AttributeError, TypeError, nib.filebasedimages.ImageFileError):
            volumes.append(Volume(volume_id, indices, "nifti", ("the NIfTI file cannot be read",)))
            continue
        lps = LPS_TO_RAS @ affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        spacing = np.where(spacing > 0, spacing, 1.0)
        full = (*shape, 1, 1, 1)[:3]
        volumes.append(
            Volume(
                volume_id,
                indices,
                "nifti",
                (),
                (full[0], full[1], full[2]),
                (float(spacing[0]), float(spacing[1]), float(spacing[2])),
                (float(lps[0, 3]), float(lps[1, 3]), float(lps[2, 3])),
                tuple(float(v) for v in (lps[:3, :3] / spacing).reshape(-1)),
            )
        )
    return volumes


def group_volumes(manifest: pd.DataFrame) -> list[Volume]:
    """Group a manifest's DICOM and NIfTI rows into volumes (plain images belong to none).

    Each DICOM file's header is read once (pixels are not read). Volumes come in the order of their first row in
    the manifest.
    """
    fmt = manifest["source_format"].astype(str) if "source_format" in manifest.columns else None
    if fmt is None or manifest.empty:
        return []
    volumes = _dicom_volumes(manifest[fmt == "dicom"]) + _nifti_volumes(manifest[fmt == "nifti"])
    return sorted(volumes, key=lambda v: min(v.indices))


def volume_table(manifest: pd.DataFrame, volumes: Sequence[Volume] | None = None) -> pd.DataFrame:
    """Each manifest row's volume: index = manifest index; ``volume_id`` (``""`` for plain images) and
    ``slice_order`` (pandas ``Int64``, 0 = first slice along the normal; ``<NA>`` for plain images).

    ``volumes`` saves the header reads when :func:`group_volumes` was already called on this manifest.
    """
    table = pd.DataFrame(
        {"volume_id": "", "slice_order": pd.array([pd.NA] * len(manifest), dtype="Int64")}, index=manifest.index
    )
    for volume in group_volumes(manifest) if volumes is None else volumes:
        index = list(volume.indices)
        table.loc[index, "volume_id"] = volume.volume_id
        table.loc[index, "slice_order"] = list(range(len(index)))
    return table
