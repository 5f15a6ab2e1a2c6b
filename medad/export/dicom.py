"""DICOM SEG (BINARY and FRACTIONAL) and Parametric Map exports via highdicom.

One object per source DICOM file, or per series (one object over a series' single-frame files, given in slice
order along the normal); each frame of the object references the source frame (or file) it segments. Objects
identify the algorithm (name, version = ``medad.__version__``), use coded segment descriptions
(category *Morphologically abnormal structure*, type *Lesion*) and carry a SeriesDescription starting
"RESEARCH USE ONLY" (followed by "RANDOM WEIGHTS - NOT A RESULT" when the model's weights are random).
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import TypedDict

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

import medad
from medad.errors import ExportError
from medad.export.deid import Deidentifier
from medad.export.sources import GEOMETRY_KEYWORDS, dicom_geometry
from medad.export.thresholds import Threshold
from medad.utils.io import write_bytes_atomic
from medad.utils.marks import RANDOM_WEIGHTS_MARK

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")
#: SOP classes whose IODs mandate a Frame of Reference, so a SEG of them must carry full plane geometry.
NEEDS_GEOMETRY = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.5.1.4.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.4.1",
        "1.2.840.10008.5.1.4.1.1.128",
        "1.2.840.10008.5.1.4.1.1.130",
        "1.2.840.10008.5.1.4.1.1.481.2",
        "1.2.840.10008.5.1.4.1.1.20",
    }
)
ANATOMY = {"skin_lesion": "Skin", "polyp": "Colon", "thyroid_nodule": "Thyroid"}
MANUFACTURER = "medad"


def _descriptions(random_weights: bool, kind: str, content: str) -> tuple[str, str]:
    """The (SeriesDescription, ContentDescription) of an object of ``kind`` (``binary SEG``, ...): the
    research-use notice, then the random-weights mark in place of "medad anomaly" when it applies (so that
    both fit the 64 characters a DICOM LO value holds)."""
    if random_weights:
        return f"RESEARCH USE ONLY {RANDOM_WEIGHTS_MARK} {kind}", f"{RANDOM_WEIGHTS_MARK} {content}"[:64]
    return f"RESEARCH USE ONLY medad anomaly {kind}", f"RESEARCH USE ONLY {content}"[:64]


def algorithm_label(algorithm_name: str, random_weights: bool) -> str:
    """The algorithm name recorded in the objects (``... RANDOM WEIGHTS`` for a random-weights model)."""
    suffix = " RANDOM WEIGHTS" if random_weights else ""
    return f"{algorithm_name[: 64 - len(suffix)]}{suffix}"


class _Equipment(TypedDict):
    """The equipment attributes every SEG / Parametric Map object gets (typed so ``**`` keeps their types)."""

    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str


def check_seg_source(ds: Dataset, case: str) -> None:
    """Raise if a DICOM source lacks what a SEG / Parametric Map referencing it needs.

    Raises:
        ExportError: naming the missing attribute and the fix (never any patient data).
    """
    missing = [k for k in REQUIRED if not ds.get(k)]
    has_any_geometry = any(k in ds for k in GEOMETRY_KEYWORDS) or "SharedFunctionalGroupsSequence" in ds
    if str(ds.get("SOPClassUID", "")) in NEEDS_GEOMETRY or has_any_geometry:
        if "SharedFunctionalGroupsSequence" not in ds:
            single = int(ds.get("NumberOfFrames", 1) or 1) == 1
            needed = (*GEOMETRY_KEYWORDS, "SliceThickness") if single else (*GEOMETRY_KEYWORDS, "GridFrameOffsetVector")
            missing += [k for k in needed if not ds.get(k)]
        elif dicom_geometry(ds) is None or not ds.get("FrameOfReferenceUID"):
            missing.append("plane geometry in SharedFunctionalGroupsSequence / FrameOfReferenceUID")
    if missing:
        raise ExportError(
            f"the DICOM source of {case} lacks {', '.join(missing)}, which DICOM SEG / Parametric "
            "Map exports need to reference it; export png,nifti only for it, or fix the source file"
        )


def _highdicom_source(ds: Dataset) -> Dataset:
    """Return the dataset highdicom should build from (legacy multi-frames get functional groups, on a copy)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1 or "SharedFunctionalGroupsSequence" in ds:
        return ds
    geometry = dicom_geometry(ds)
    if geometry is None:
        return ds
    src = ds.copy()
    thickness = float(np.linalg.norm(geometry.slice_step))
    shared = Dataset()
    shared.PixelMeasuresSequence = hd.PixelMeasuresSequence(list(geometry.spacing), thickness, thickness)
    shared.PlaneOrientationSequence = hd.PlaneOrientationSequence(
        hd.CoordinateSystemNames.PATIENT, [*geometry.row_cosine.tolist(), *geometry.col_cosine.tolist()]
    )
    src.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for position in geometry.positions:
        item = Dataset()
        item.PlanePositionSequence = hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, position.tolist())
        per_frame.append(item)
    src.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return src


def _segment(label: str, class_name: str, algorithm: hd.AlgorithmIdentificationSequence) -> hd.seg.SegmentDescription:
    region = ANATOMY.get(class_name)
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[getattr(codes.SCT, region)] if region else None,
        display_color=hd.color.CIELabColor.from_rgb(0, 255, 255),
    )


def _result_uid(sources: Seq[Dataset], kind: str, array: np.ndarray, threshold: Threshold, part: str) -> hd.UID:
    """A UID fixed by the source instances, the object kind and its content, so re-exporting the same result gives
    the same UIDs (a PACS store can then see it already holds the object and never stores it twice)."""
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    instances = ",".join(str(source.SOPInstanceUID) for source in sources)
    parts = [instances, kind, part, digest, threshold.describe(), medad.__version__]
    return hd.UID(pydicom.uid.generate_uid(entropy_srcs=parts))


def _finish(obj: Dataset, source: Dataset, deid: Deidentifier | None, path: Path) -> None:
    """Complete, optionally de-identify (a deep copy: highdicom shares elements with the source) and save."""
    if "FrameOfReferenceUID" not in obj and "PatientOrientation" not in obj:
        obj.PatientOrientation = source.get("PatientOrientation", "")
    if deid is not None:
        obj = deid.apply(copy.deepcopy(obj))
    buffer = io.BytesIO()
    obj.save_as(buffer, enforce_file_format=True)
    write_bytes_atomic(path, buffer.getvalue())


def write_dicom_exports(
    source_path: Path | Seq[Path],
    masks: np.ndarray,
    heatmaps: np.ndarray,
    formats: set[str],
    paths: Mapping[str, Path],
    *,
    algorithm_name: str,
    class_name: str,
    threshold: Threshold,
    case: str,
    deid: Deidentifier | None,
    random_weights: bool = False,
) -> tuple[dict[str, str], list[str]]:
    """Write DICOM SEG (binary + fractional) and/or a Parametric Map for one source DICOM file or one series.

    Args:
        source_path: the source DICOM file, or a series' single-frame files in slice order (one object then
            references every file, frame ``k`` the file ``k``).
        masks: boolean (frames, rows, columns).
        heatmaps: float (frames, rows, columns), anomaly scores.
        formats: subset of ``{"dicom-seg", "pmap"}``.
        paths: output paths under keys ``seg``, ``seg_fractional``, ``pmap``.
        algorithm_name: algorithm name recorded in the objects.
        class_name: manifest class (adds an anatomic region for known classes).
        threshold: threshold that made ``masks`` (recorded in ContentDescription).
        case: pseudonymous case id for messages.
        deid: a de-identifier to apply, or None to keep the source's patient and study attributes.
        random_weights: the model's weights are random: every object says :data:`RANDOM_WEIGHTS_MARK` in its
            SeriesDescription and ContentDescription, and its algorithm name ends in ``RANDOM WEIGHTS``.

    Returns:
        ``(files, notes)``: written file names by kind, and notes on what was skipped and why.

    Raises:
        ExportError: if the source lacks attributes these objects need.
    """
    datasets = [pydicom.dcmread(p) for p in ([source_path] if isinstance(source_path, Path) else source_path)]
    for each in datasets:
        check_seg_source(each, case)
    ds = datasets[0]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    has_for = bool(ds.get("FrameOfReferenceUID"))
    sources = [_highdicom_source(each) for each in datasets]
    algorithm_name = algorithm_label(algorithm_name, random_weights)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=medad.__version__, family=codes.cid7162.ArtificialIntelligence
    )
    common: _Equipment = {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": algorithm_name,
        "software_versions": medad.__version__,
        "device_serial_number": "0",
    }
    files: dict[str, str] = {}
    notes: list[str] = []
    if "dicom-seg" in formats:
        if frames > 1 and not has_for:
            notes.append(
                "dicom-seg skipped: a multi-frame source without a Frame of Reference cannot be "
                "segmented frame by frame in one SEG (use the PNG/NIfTI exports)"
            )
        else:
            soft = np.clip(np.nan_to_num(heatmaps, nan=0.0), 0.0, 1.0).astype(np.float32)
            for kind, seg_type, array, number in (
                ("seg", "BINARY", masks, 9001),
                ("seg_fractional", "FRACTIONAL", soft, 9002),
            ):
                label = "anomaly mask" if seg_type == "BINARY" else "anomaly probability"
                series, content = _descriptions(
                    random_weights, f"{seg_type.lower()} SEG", f"threshold {threshold.describe()}"
                )
                seg = hd.seg.Segmentation(
                    source_images=sources,
                    pixel_array=array,
                    segmentation_type=seg_type,
                    segment_descriptions=[_segment(label, class_name, algorithm)],
                    series_instance_uid=_result_uid(datasets, kind, array, threshold, "series"),
                    series_number=number,
                    sop_instance_uid=_result_uid(datasets, kind, array, threshold, "instance"),
                    instance_number=1,
                    fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                    content_label="MEDAD_ANOMALY",
                    content_description=content,
                    series_description=series,
                    omit_empty_frames=False,
                    **common,
                )
                _finish(seg, ds, deid, paths[kind])
                files[kind] = paths[kind].name
    if "pmap" in formats:
        if not has_for:
            notes.append(
                "pmap skipped: the source has no Frame of Reference, which highdicom's Parametric Map "
                "needs (use the heatmap PNG/NIfTI exports)"
            )
        else:
            values = np.nan_to_num(heatmaps, nan=0.0).astype(np.float32)
            lo, hi = float(values.min()), float(values.max())
            hi = hi if hi > lo else lo + 1.0
            mapping = hd.pm.RealWorldValueMapping(
                lut_label="ANOMALY",
                lut_explanation=f"medad anomaly score, range {lo:.4g} to {hi:.4g}",
                unit=codes.UCUM.NoUnits,
                value_range=(lo, hi),
                slope=1.0,
                intercept=0.0,
                quantity_definition=codes.DCM.ClassActivation,
            )
            series, content = _descriptions(random_weights, "parametric map", "anomaly scores")
            pmap = hd.pm.ParametricMap(
                source_images=sources,
                pixel_array=values,
                series_instance_uid=_result_uid(datasets, "pmap", values, threshold, "series"),
                series_number=9003,
                sop_instance_uid=_result_uid(datasets, "pmap", values, threshold, "instance"),
                instance_number=1,
                contains_recognizable_visual_features=False,
                real_world_value_mappings=[mapping],
                voi_lut_transformations=[
                    hd.VOILUTTransformation(
                        window_center=(lo + hi) / 2, window_width=hi - lo, voi_lut_function="LINEAR_EXACT"
                    )
                ],
                series_description=series,
                content_label="MEDAD_ANOMALY",
                content_description=content,
                **common,
            )
            if "Laterality" not in pmap:
                pmap.Laterality = ds.get("Laterality", None)
            _finish(pmap, ds, deid, paths["pmap"])
            files["pmap"] = paths["pmap"].name
    return files, notes
