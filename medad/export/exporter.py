"""Export a predictions folder for clinician review: masks, heatmaps, overlays, NIfTI, DICOM SEG / PMAP.

The whole export is written into a hidden temporary sibling of the output folder and moved into place only
when every file is written, so a failure never leaves a half-written export behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom

import medad
from medad.engine.predictions import PredictionReader, predictions_random_weights
from medad.errors import DiskError, ExportError, MedadError, disk_error
from medad.export.deid import METHOD, Deidentifier
from medad.export.dicom import write_dicom_exports
from medad.export.formats import FORMATS, volume_formats
from medad.export.gallery import write_gallery
from medad.export.manifest import manifest_for_run, predictions_folder
from medad.export.nifti import NO_GEOMETRY_AFFINE, dicom_frames_to_volume, write_nifti_pair
from medad.export.png import write_display_png, write_heatmap_png, write_mask_png, write_overlay_png
from medad.export.resolve import resolve_threshold
from medad.export.sources import DISPLAY_PERCENTILES, dicom_geometry, display_image, load_nifti, source_shape
from medad.export.thresholds import Threshold
from medad.export.volumes import SeriesExport, VolumePlan, fallback_note, plan_volumes
from medad.utils.colors import GT_CONTOUR, HEATMAP_CMAP, PRED_CONTOUR
from medad.utils.io import write_json_atomic, write_text_atomic
from medad.utils.privacy import case_id as make_case_id

log = logging.getLogger("medad.export")

#: How images are windowed for display, recorded in ``export.json``.
DISPLAY_WINDOW = (
    "8-bit images as stored; DICOM frames with their VOI window (else as below); 16-bit / float images and "
    f"NIfTI slices between their {DISPLAY_PERCENTILES[0]} and {DISPLAY_PERCENTILES[1]} percentiles"
)


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Validate export formats given as ``"png,nifti"`` or a sequence.

    Raises:
        ExportError: for an unknown or empty format list.
    """
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ExportError(f"unknown export format(s) {unknown or items}; choose from {','.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)


def _value(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    return None if value is None or pd.isna(value) else value


def _case(row: Mapping[str, Any], repeated: bool = False) -> str:
    """The row's file stem: its ``case_id`` (``_fNNNN`` added when several rows share one case id)."""
    frame = _value(row, "frame")
    given = _value(row, "case_id")
    if not given:
        return make_case_id(f"{row['image_path']}#{'' if frame is None else int(frame)}")
    return f"{given}_f{int(frame):04d}" if repeated and frame is not None else str(given)


def _algorithm_name(meta: Mapping[str, Any]) -> str:
    model = meta.get("model")
    name = model.get("name") if isinstance(model, Mapping) else model
    name = name or meta.get("model_name") or "AD-DINOv3"
    return f"medad {name}"


def _model_name(meta: Mapping[str, Any]) -> str:
    return _algorithm_name(meta).removeprefix("medad ")


#: Errors raised while reading a source file (unreadable, undecodable, missing DICOM decoder) or while building
#: its DICOM objects (highdicom refusing the source): they skip that source, never the whole export.
_SOURCE_ERRORS = (
    MedadError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RuntimeError,
    pydicom.errors.InvalidDicomError,
)


def _reason(exc: BaseException) -> str:
    """A shareable reason for a skipped source: medad's own messages (which name only the case id), else the
    exception type (library messages may quote source attributes)."""
    if isinstance(exc, ExportError):
        return str(exc)
    return f"the source could not be read or converted ({type(exc).__name__})"


#: Notes ``"dicom-seg,pmap skipped: why"`` of the volume step saying a requested DICOM object of a DICOM source
#: could not be made: such a source is listed as skipped (not-applicable formats of plain images and NIfTI stay
#: notes).
_DICOM_FORMATS = {"dicom-seg", "pmap"}
_VOLUME_SUFFIXES = ("_mask.nii.gz", "_heatmap.nii.gz", "_seg.dcm", "_seg_fractional.dcm", "_pmap.dcm")


class _Skips:
    """Sources skipped by an export: shareable rows for ``skipped.csv``, and the formats each source path missed
    (paths stay in memory: every message names the case id only, as a DICOM path may hold the patient's name)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.failed: dict[str, set[str]] = {}

    @property
    def paths(self) -> set[str]:
        """The source paths with at least one skipped format."""
        return set(self.failed)

    def add(self, path: str, case: str, formats: str, exc: BaseException) -> None:
        reason = _reason(exc)
        self.rows.append({"case_id": case, "formats": formats, "reason": reason})
        self.failed.setdefault(path, set()).update(formats.split(","))
        print(f"medad export: skipped {formats} of case {case}: {reason}", file=sys.stderr)

    def write(self, path: Path) -> None:
        frame = pd.DataFrame(self.rows, columns=["case_id", "formats", "reason"])
        write_text_atomic(path, frame.to_csv(index=False))


def _ground_truth(row: Mapping[str, Any], case: str) -> tuple[np.ndarray | None, str | None]:
    """The row's ground-truth mask when it has one (else None), and a note when it cannot be read."""
    if not str(_value(row, "mask_path") or ""):
        return None, None
    from medad.data.readers import read_mask

    try:
        return read_mask(row), None
    except MedadError:
        note = f"ground-truth mask of {case} not shown: it cannot be read or does not match the image"
        print(f"medad export: {note}", file=sys.stderr)
        return None, note


class _Group:
    """Rows of one DICOM / NIfTI source file, gathered for volume exports."""

    def __init__(self, case: str, row: Mapping[str, Any]) -> None:
        self.case = case
        self.row = row
        self.frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.cases: list[str] = []


def _write_volume_group(
    group: _Group,
    formats: Sequence[str],
    tmp: Path,
    threshold: Threshold,
    algorithm: str,
    deid: Deidentifier | None,
    random_weights: bool,
    ordered: tuple[list[int], np.ndarray] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The NIfTI / SEG / Parametric Map files of one source file; ``ordered`` gives a multi-frame file's frames in
    slice order and the volume's affine, so its NIfTI volume runs along the normal whatever the frames' order."""
    row, case = group.row, group.case
    path = Path(str(row["image_path"]))
    files: dict[str, str] = {}
    notes: list[str] = []
    if row["source_format"] == "nifti":
        img = load_nifti(path)
        if not isinstance(img, nib.Nifti1Pair):  # NIfTI-1 / NIfTI-2, single file or .hdr/.img pair
            raise ExportError(
                f"the source of {case} is a {type(img).__name__}, not NIfTI; its NIfTI export needs a NIfTI source"
            )
        if len(img.shape) not in (2, 3):
            raise ExportError(f"the NIfTI source of {case} is {len(img.shape)}-D; medad exports 2-D/3-D images only")
        axis = int(_value(row, "slice_axis") if _value(row, "slice_axis") is not None else 2)
        mask, heat = np.zeros(img.shape, np.uint8), np.zeros(img.shape, np.float32)
        for frame, (m, h) in group.frames.items():
            index: list[Any] = [slice(None)] * len(img.shape)
            if len(img.shape) == 3:
                index[axis] = frame
            mask[tuple(index)], heat[tuple(index)] = m, h
        affine, code = img.affine, int(img.header["sform_code"]) or int(img.header["qform_code"]) or 1
        if "nifti" in formats:
            write_nifti_pair(mask, heat, affine, code, tmp / f"{case}_mask.nii.gz", tmp / f"{case}_heatmap.nii.gz")
            files.update(nifti_mask=f"{case}_mask.nii.gz", nifti_heatmap=f"{case}_heatmap.nii.gz")
        return files, notes
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    masks = np.zeros((n, int(ds.Rows), int(ds.Columns)), bool)
    heats = np.zeros(masks.shape, np.float32)
    for frame, (m, h) in group.frames.items():
        masks[frame], heats[frame] = m, h
    if len(group.frames) < n:
        notes.append(f"{n - len(group.frames)} of {n} frames have no prediction and are exported as zeros")
    if "nifti" in formats:
        affine, code, order = _dicom_nifti_geometry(ds, n, ordered, notes)
        write_nifti_pair(
            dicom_frames_to_volume(masks[order]),
            dicom_frames_to_volume(heats[order]),
            affine,
            code,
            tmp / f"{case}_mask.nii.gz",
            tmp / f"{case}_heatmap.nii.gz",
        )
        files.update(nifti_mask=f"{case}_mask.nii.gz", nifti_heatmap=f"{case}_heatmap.nii.gz")
    written, more = _write_dicom_objects(
        path, masks, heats, formats, tmp, case, (algorithm, random_weights), threshold, deid, row
    )
    files.update(written)
    notes.extend(more)
    return files, notes


def _dicom_nifti_geometry(
    ds: pydicom.Dataset, n: int, ordered: tuple[list[int], np.ndarray] | None, notes: list[str]
) -> tuple[np.ndarray, int, list[int]]:
    """The NIfTI affine, xform code and frame order of a DICOM file's volume: a multi-frame volume's slice order
    and geometry when every frame takes part, else the frames as stored with the file's geometry (noted when it
    has no patient coordinate system)."""
    if ordered is not None and sorted(ordered[0]) == list(range(n)):
        return ordered[1], 1, ordered[0]
    geometry = dicom_geometry(ds)
    if geometry is None:
        notes.append("the DICOM source has no patient coordinate system; NIfTI uses 1 mm pixels, diag(-1,-1,1)")
        return NO_GEOMETRY_AFFINE, 0, list(range(n))
    return geometry.affine_ras(), 1, list(range(n))


def _write_dicom_objects(
    sources: Path | Sequence[Path],
    masks: np.ndarray,
    heats: np.ndarray,
    formats: Sequence[str],
    tmp: Path,
    case: str,
    algorithm: tuple[str, bool],
    threshold: Threshold,
    deid: Deidentifier | None,
    row: Mapping[str, Any],
) -> tuple[dict[str, str], list[str]]:
    """The SEG / fractional SEG / Parametric Map of one source file or one series (files in slice order), named
    ``case``; a source that cannot be referenced gives a ``... skipped:`` note instead."""
    wanted = {f for f in formats if f in ("dicom-seg", "pmap")}
    if not wanted:
        return {}, []
    paths = {
        "seg": tmp / f"{case}_seg.dcm",
        "seg_fractional": tmp / f"{case}_seg_fractional.dcm",
        "pmap": tmp / f"{case}_pmap.dcm",
    }
    try:
        return write_dicom_exports(
            sources,
            masks,
            heats,
            wanted,
            paths,
            algorithm_name=algorithm[0],
            class_name=str(_value(row, "class_name") or ""),
            threshold=threshold,
            case=case,
            deid=deid,
            random_weights=algorithm[1],
        )
    except ExportError as exc:  # the source cannot be referenced: its NIfTI files are kept
        return {}, [f"{','.join(f for f in FORMATS if f in wanted)} skipped: {exc}"]


def _write_series(
    series: SeriesExport,
    groups: Mapping[str, _Group],
    formats: Sequence[str],
    tmp: Path,
    threshold: Threshold,
    algorithm: tuple[str, bool],
    deid: Deidentifier | None,
) -> tuple[dict[str, str], list[str]]:
    """One SEG, fractional SEG, Parametric Map and NIfTI pair over a whole regular series, frames in slice order
    along the normal, named by the volume id; the NIfTI affine is the series geometry."""
    volume, stem = series.volume, series.volume.volume_id
    columns, rows, _ = volume.size or (0, 0, 0)
    masks = np.zeros((len(series.slices), rows, columns), bool)
    heats = np.zeros(masks.shape, np.float32)
    scored = [path in groups and frame in groups[path].frames for path, frame in series.slices]
    for k, (path, frame) in enumerate(series.slices):
        if scored[k]:
            masks[k], heats[k] = groups[path].frames[frame]
    notes = []
    unscored = scored.count(False)
    if unscored:
        notes.append(f"{unscored} of {len(series.slices)} slices have no prediction and are exported as zeros")
    files: dict[str, str] = {}
    affine = volume.affine()
    if "nifti" in formats and affine is not None:
        mask_name, heat_name = f"{stem}_mask.nii.gz", f"{stem}_heatmap.nii.gz"
        write_nifti_pair(
            dicom_frames_to_volume(masks), dicom_frames_to_volume(heats), affine, 1, tmp / mask_name, tmp / heat_name
        )
        files.update(nifti_mask=mask_name, nifti_heatmap=heat_name)
    row = next(groups[path].row for path in series.paths if path in groups)
    sources = [Path(p) for p in series.paths]
    written, more = _write_dicom_objects(sources, masks, heats, formats, tmp, stem, algorithm, threshold, deid, row)
    files.update(written)
    return files, notes + more


def _remove_made(folders: Sequence[Path]) -> None:
    """Remove the parent folders an export made for itself, deepest first, when it failed (only empty ones)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _open_temp(out_dir: Path, overwrite: bool) -> tuple[Path, list[Path]]:
    """The hidden temporary sibling of ``out_dir`` to write into, and the parent folders made for it (removed
    again if the export fails, so a refused export leaves nothing behind)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ExportError(
            f"output folder {out_dir} already exists and is not empty; choose a new --out or pass --overwrite"
        )
    made = [p for p in out_dir.absolute().parents if not p.exists()]
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
        probe = tmp / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        _remove_made(made)
        raise _write_error(exc, out_dir) from None
    return tmp, made


#: Write failures that are never a source's fault: a full disk or quota, a file-size limit.
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _full_disk(exc: BaseException) -> OSError | None:
    """The full-disk ``OSError`` behind ``exc`` (itself or a cause a library wrapped), else ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_DISK:
            return current
        current = current.__cause__ or current.__context__
    return None


#: Free space under which a write failure that names no cause is taken for a full disk.
_NEARLY_FULL = 64 << 20


def _free_bytes(out_dir: Path) -> int | None:
    """Free bytes on the disk of ``out_dir`` (its nearest existing parent), or None when that cannot be read."""
    folder = out_dir.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def _write_error(exc: BaseException, out_dir: Path) -> MedadError:
    """The user error for a failed write of the export folder: the disk is full (or read-only, ...) with the
    folder named, else that the folder cannot be written and why."""
    cause = _full_disk(exc) or exc
    if isinstance(cause, OSError) and (found := disk_error(cause, out_dir)) is not None:
        return found
    free = _free_bytes(out_dir)
    if free is not None and free < _NEARLY_FULL:  # a library's write error without errno, on a full disk
        return DiskError(
            f"the disk holding {out_dir} is full ({free // 1024} KiB free) and the export could not be written: "
            "free space and rerun"
        )
    why = cause.strerror if isinstance(cause, OSError) and cause.strerror else type(cause).__name__
    return ExportError(f"cannot write the export folder {out_dir} ({why}); choose a writable folder with --out")


def export_predictions(
    predictions_dir: str | Path,
    manifest: pd.DataFrame,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    threshold: Threshold,
    deidentify: bool = False,
    deid_salt: str | None = None,
    overwrite: bool = False,
    per_file: bool = False,
) -> Path:
    """Export every predicted image of a predictions folder for review.

    Per image (named by its pseudonymous ``case_id``): ``png`` writes ``_mask.png`` (0/255, original size),
    ``_heatmap.png`` (16-bit, range recorded), ``_heatmap.npy`` (float32), ``_image.png`` and
    ``_overlay.png``, plus an offline ``index.html`` gallery. Per DICOM / NIfTI source file: ``nifti`` writes
    ``_mask.nii.gz`` (uint8) and ``_heatmap.nii.gz`` (float32) in the source geometry; for DICOM sources
    ``dicom-seg`` writes ``_seg.dcm`` (BINARY) and ``_seg_fractional.dcm``, ``pmap`` writes ``_pmap.dcm``.
    A DICOM series of several single-frame files whose slices make one regular grid gets one of each, named by
    its volume id, over all its files in slice order (see :mod:`medad.export.volumes`); a series with a problem
    is exported per file with a note naming it (``export.json`` ``volumes``), as every file is with ``per_file``.
    Volumes are grouped whatever the formats: a PNG-only export gives each DICOM / NIfTI case its ``volume_id``
    and ``slice_order`` (one gallery row per volume) and lists the volumes without ``export`` / ``outputs``.
    ``export.json`` records the threshold, formats, medad version, the model and its ``random_weights`` flag
    (from the predictions' ``meta.json``), the display window, the contour colours and per-case files.

    A source that cannot be exported (unreadable, or a DICOM file lacking what SEG / Parametric Map need) never
    stops the others: what can be written is, and the rest is listed in ``skipped.csv`` and ``export.json``
    (``summary``, ``skipped``) by case id and reason; its path is printed on stderr only.

    Args:
        predictions_dir: a folder written by :class:`medad.engine.predictions.PredictionWriter`.
        manifest: the manifest the predictions were scored from (row position = manifest index).
        out_dir: the export folder to create (must not exist, or be empty, unless ``overwrite``).
        formats: any of ``png``, ``nifti``, ``dicom-seg``, ``pmap``.
        threshold: the threshold turning maps into masks (``map >= threshold.value``).
        deidentify: apply the PS3.15 Basic profile to DICOM exports.
        deid_salt: secret for stable pseudonyms across exports (default: random per export).
        overwrite: replace an existing non-empty ``out_dir``.
        per_file: one set of volume files per source file, even for a regular series.

    Returns:
        The export folder.

    Raises:
        ExportError: for a bad format, a map whose size differs from its source, an unwritable folder, or a
            manifest that does not match the predictions.
    """
    formats = parse_formats(formats)
    out_dir = Path(out_dir)
    reader = PredictionReader(predictions_dir)
    if reader.indices.size and int(reader.indices.max()) >= len(manifest):
        raise ExportError(
            f"predictions in {predictions_dir} go up to index {int(reader.indices.max())} but the "
            f"manifest has {len(manifest)} rows; pass the manifest the predictions were scored from"
        )
    algorithm = _algorithm_name(reader.meta)
    model: dict[str, Any] = {
        "name": _model_name(reader.meta),
        "random_weights": predictions_random_weights(reader.meta),
    }
    deid = Deidentifier(deid_salt) if deidentify else None
    tmp, made = _open_temp(out_dir, overwrite)
    try:
        groups: dict[str, _Group] = {}
        skips, sources = _Skips(), dict[str, list[dict[str, Any]]]()
        cases = _export_cases(reader, manifest, formats, threshold, model, tmp, skips, groups, sources)
        exported = [path for path, entries in sources.items() if entries]
        plan = plan_volumes(manifest, exported, per_file, write=bool(volume_formats(formats)))
        _export_volumes(
            groups, cases, formats, tmp, threshold, (algorithm, model["random_weights"]), deid, skips, plan
        )
        predicted = set(reader.indices.tolist())
        unscored = [_case(manifest.iloc[i].to_dict()) for i in range(len(manifest)) if i not in predicted]
        by_format = _by_format(sources, formats, skips)
        written = [p for p, entries in sources.items() if p not in skips.failed and _any_written(entries, formats)]
        summary = {"sources": len(sources), "written": len(written), "skipped": len(skips.rows)}
        empty = [c["case_id"] for c in cases if c["mask_pixels"] == 0]
        if "png" in formats:
            write_gallery(tmp / "index.html", cases, threshold, model=model)
        skips.write(tmp / "skipped.csv")
        write_json_atomic(
            tmp / "export.json",
            {
                "medad_version": medad.__version__,
                "algorithm": algorithm,
                "models": [model],
                "random_weights": model["random_weights"],
                "formats": list(formats),
                "threshold": threshold.to_dict(),
                "mask_rule": "map >= threshold.value",
                "display_window": DISPLAY_WINDOW,
                "colors": {
                    "predicted_contour": PRED_CONTOUR,
                    "ground_truth_contour": GT_CONTOUR,
                    "heatmap": HEATMAP_CMAP,
                },
                "research_use_only": True,
                "deidentified": deidentify,
                "deidentification_method": METHOD if deidentify else None,
                "summary": summary,
                "by_format": by_format,
                "empty_masks": empty,
                "skipped": skips.rows,
                "per_file": per_file,
                "volumes": _volume_records(plan, cases),
                "cases": cases,
                "unscored_cases": unscored,
            },
        )
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_made(made)
        if isinstance(exc, OSError) or _full_disk(exc) is not None:
            raise _write_error(exc, out_dir) from None
        raise
    log.info(
        "exported %d cases (%s) to %s with threshold %s", len(cases), ",".join(formats), out_dir, threshold.describe()
    )
    return out_dir


def _export_cases(
    reader: PredictionReader,
    manifest: pd.DataFrame,
    formats: Sequence[str],
    threshold: Threshold,
    model: Mapping[str, Any],
    tmp: Path,
    skips: _Skips,
    groups: dict[str, _Group],
    sources: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Step 1 of an export: per predicted image, its ``export.json`` entry and PNGs; DICOM / NIfTI rows are
    gathered into ``groups`` (one per source file) for the volume step. Unreadable sources go to ``skips``;
    ``sources`` maps every source path to the entries of its exported cases."""
    cases: list[dict[str, Any]] = []
    counts = manifest["case_id"].value_counts() if "case_id" in manifest else pd.Series(dtype=int)
    for index, pixel_map in reader.iter_maps():
        row = manifest.iloc[index].to_dict()
        case = _case(row, int(counts.get(row.get("case_id"), 0)) > 1)
        entries = sources.setdefault(str(row["image_path"]), [])
        try:
            shape = source_shape(row, case)
        except ExportError as exc:
            skips.add(str(row["image_path"]), case, ",".join(formats), exc)
            continue
        if pixel_map.shape != shape:
            raise ExportError(
                f"the prediction map of {case} (manifest index {index}) is "
                f"{pixel_map.shape[0]}x{pixel_map.shape[1]} but its source image is "
                f"{shape[0]}x{shape[1]}; re-score with maps at native resolution"
            )
        pixel_map = pixel_map.astype(np.float32)
        mask = pixel_map >= threshold.value
        score = float(reader.image_scores[np.searchsorted(reader.indices, index)])
        entry = _case_entry(row, case, int(index), shape, score, mask)
        if "png" in formats:
            try:
                image = display_image(row)
            except _SOURCE_ERRORS as exc:
                if _full_disk(exc) is not None:
                    raise
                skips.add(str(row["image_path"]), case, ",".join(formats), exc)
                continue
            _write_case_pngs(entry, row, image, pixel_map, mask, threshold, model, tmp)
        if not entry["mask_pixels"]:
            entry["notes"].append(f"empty mask: no pixel scores at or above the threshold {threshold.value:.6g}")
        _gather_volume(entry, row, pixel_map, mask, formats, groups)
        cases.append(entry)
        entries.append(entry)
    return cases


def _case_entry(
    row: Mapping[str, Any], case: str, index: int, shape: tuple[int, int], score: float, mask: np.ndarray
) -> dict[str, Any]:
    """A case's ``export.json`` entry before any file is written (``files`` and ``notes`` filled later)."""
    label = _value(row, "label")
    frame = _value(row, "frame")
    return {
        "case_id": case,
        "index": index,
        "dataset": str(_value(row, "dataset") or ""),
        "class_name": str(_value(row, "class_name") or ""),
        "split": str(_value(row, "split") or ""),
        "label": None if label is None else int(label),
        "source_format": str(row["source_format"]),
        "frame": None if frame is None else int(frame),
        "image_score": score,
        "mask_pixels": int(mask.sum()),
        "size": list(shape),
        "files": {},
        "notes": [],
    }


def _write_case_pngs(
    entry: dict[str, Any],
    row: Mapping[str, Any],
    image: np.ndarray,
    pixel_map: np.ndarray,
    mask: np.ndarray,
    threshold: Threshold,
    model: Mapping[str, Any],
    tmp: Path,
) -> None:
    """The ``png`` format of one case: mask, 16-bit heatmap (+ float ``.npy``), display image and overlay."""
    case = entry["case_id"]
    gt_mask, gt_note = _ground_truth(row, case)
    if gt_note:
        entry["notes"].append(gt_note)
    write_mask_png(mask, tmp / f"{case}_mask.png")
    lo, hi = write_heatmap_png(pixel_map, tmp / f"{case}_heatmap.png")
    np.save(tmp / f"{case}_heatmap.npy", pixel_map)
    write_display_png(image, tmp / f"{case}_image.png")
    write_overlay_png(
        image,
        pixel_map,
        mask,
        threshold,
        entry["image_score"],
        case,
        tmp / f"{case}_overlay.png",
        gt_mask=gt_mask,
        model=model["name"],
        random_weights=model["random_weights"],
    )
    entry["heatmap_png_range"] = [lo, hi]
    entry["ground_truth"] = gt_mask is not None
    entry["files"] = {
        "mask": f"{case}_mask.png",
        "heatmap_png": f"{case}_heatmap.png",
        "heatmap_npy": f"{case}_heatmap.npy",
        "image": f"{case}_image.png",
        "overlay": f"{case}_overlay.png",
    }


def _gather_volume(
    entry: dict[str, Any],
    row: Mapping[str, Any],
    pixel_map: np.ndarray,
    mask: np.ndarray,
    formats: Sequence[str],
    groups: dict[str, _Group],
) -> None:
    """Add a DICOM / NIfTI case to its source file's group for the volume formats; note the formats that do not
    apply to its source."""
    fmt, frame = entry["source_format"], entry["frame"]
    volumes = bool(volume_formats(formats))
    if fmt in ("dicom", "nifti") and volumes:
        group = groups.setdefault(str(row["image_path"]), _Group(entry["case_id"], row))
        group.frames[0 if frame is None else frame] = (mask, pixel_map)
        group.cases.append(entry["case_id"])
    elif fmt == "image" and volumes:
        entry["notes"].append(
            "nifti/dicom-seg/pmap skipped: plain images carry no physical geometry or "
            "DICOM references (use the PNG exports)"
        )
    if fmt == "nifti" and {"dicom-seg", "pmap"} & set(formats):
        entry["notes"].append("dicom-seg/pmap skipped: the source is NIfTI, not DICOM")


def _export_fault(exc: BaseException, tmp: Path) -> bool:
    """Whether a failure is the export folder's (a write under ``tmp``, a full disk), not the source's."""
    written = isinstance(exc, OSError) and Path(getattr(exc, "filename", "") or "/").is_relative_to(tmp)
    return written or _full_disk(exc) is not None


def _skip_dicom_notes(notes: Sequence[str], key: str, case: str, skips: _Skips) -> None:
    """List a source in ``skipped.csv`` for each note saying a requested DICOM object of it could not be made."""
    for note in notes:
        formats_skipped, found, why = note.partition(" skipped: ")
        if found and set(formats_skipped.split(",")) <= _DICOM_FORMATS:
            skips.add(key, case, formats_skipped, ExportError(why))


def _record_files(group: _Group, by_case: Mapping[str, dict[str, Any]], files: dict[str, str], stem: str,
                  notes: Sequence[str]) -> None:  # fmt: skip
    for member in group.cases:
        by_case[member]["volume_files"] = files
        by_case[member]["volume_case"] = stem
        by_case[member]["notes"].extend(notes)


def _export_series(
    plan: VolumePlan,
    groups: Mapping[str, _Group],
    by_case: Mapping[str, dict[str, Any]],
    settings: tuple[Sequence[str], Path, Threshold, tuple[str, bool], Deidentifier | None],
    skips: _Skips,
) -> set[str]:
    """The regular multi-file series of ``plan``, each as one set of objects; returns the source files written so.
    A series whose objects cannot be made falls back to per-file export (its partial files removed, noted)."""
    formats, tmp, threshold, algorithm, deid = settings
    done: set[str] = set()
    for series in plan.series:
        stem = series.volume.volume_id
        try:
            files, notes = _write_series(series, groups, formats, tmp, threshold, algorithm, deid)
        except _SOURCE_ERRORS as exc:
            if _export_fault(exc, tmp):
                raise
            for suffix in _VOLUME_SUFFIXES:
                (tmp / f"{stem}{suffix}").unlink(missing_ok=True)
            problem = f"one object over the series could not be made: {_reason(exc)}"
            series.record.update(export="per-file", problems=[*series.record["problems"], problem])
            plan.fallback.update(dict.fromkeys(series.paths, fallback_note(stem, [problem])))
            continue
        series.record["outputs"] = files
        for path in dict.fromkeys(p for p in series.paths if p in groups):
            _skip_dicom_notes(notes, path, groups[path].case, skips)
            _record_files(groups[path], by_case, files, stem, notes)
            done.add(path)
    return done


def _export_volumes(
    groups: Mapping[str, _Group],
    cases: list[dict[str, Any]],
    formats: Sequence[str],
    tmp: Path,
    threshold: Threshold,
    algorithm: tuple[str, bool],
    deid: Deidentifier | None,
    skips: _Skips,
    plan: VolumePlan,
) -> None:
    """Step 2 of an export: each DICOM / NIfTI case's ``volume_id`` and ``slice_order`` (whatever the formats, so
    the gallery shows a volume as one row), then the NIfTI / DICOM SEG / Parametric Map files of each regular
    series (one set of objects per series) and of each other source file, recorded in its cases' entries; a
    source that fails is skipped (its partial files removed), never the whole export. ``algorithm`` is the
    algorithm name and whether the model's weights are random (said in the DICOM objects)."""
    by_case = {c["case_id"]: c for c in cases}
    _link_volumes(plan, cases)
    done = _export_series(plan, groups, by_case, (formats, tmp, threshold, algorithm, deid), skips)
    asked = ",".join(volume_formats(formats))
    for key, group in groups.items():
        if key in done:
            continue
        try:
            files, notes = _write_volume_group(
                group, formats, tmp, threshold, algorithm[0], deid, algorithm[1], plan.ordered.get(key)
            )
        except _SOURCE_ERRORS as exc:
            if _export_fault(exc, tmp):  # the export folder cannot be written: not the source's fault
                raise
            skips.add(key, group.case, asked, exc)
            for suffix in _VOLUME_SUFFIXES:  # what was written before the failure is not listed: remove it
                (tmp / f"{group.case}{suffix}").unlink(missing_ok=True)
            files, notes = {}, [f"{asked} skipped: {_reason(exc)}"]
        else:
            _skip_dicom_notes(notes, key, group.case, skips)
        fallback = plan.fallback.get(key)
        _record_files(group, by_case, files, group.case, ([fallback] if fallback else []) + notes)


def _volume_records(plan: VolumePlan, cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``volumes`` of ``export.json``: a volume exported per file or as one file lists its cases' files (a
    volume of an export without volume formats has no ``export`` / ``outputs``: no volume object was written)."""
    by_case = {c["case_id"]: c for c in cases}
    for record in plan.records:
        if record.get("export") in ("file", "per-file") and record["cases"]:
            record["outputs"] = dict(by_case[record["cases"][0]].get("volume_files") or {})
    return plan.records


def _link_volumes(plan: VolumePlan, cases: Sequence[dict[str, Any]]) -> None:
    """Give each case entry its ``volume_id`` and ``slice_order`` (0 = first along the normal; the gallery
    browses a volume's slices by it) and each volume record its case ids in slice order."""
    by_index = {c["index"]: c for c in cases}
    records = {r["volume_id"]: r for r in plan.records}
    position: dict[str, int] = {}
    for index, volume_id in plan.volume_of.items():  # each volume's indices in slice order
        position[volume_id] = order = position.get(volume_id, -1) + 1
        if index in by_index:
            by_index[index]["volume_id"] = volume_id
            by_index[index]["slice_order"] = order
            records[volume_id]["cases"].append(by_index[index]["case_id"])


#: Where each format's files are recorded in a case entry: (entry key, file key).
_FILE_KEYS = {
    "png": ("files", "overlay"),
    "nifti": ("volume_files", "nifti_mask"),
    "dicom-seg": ("volume_files", "seg"),
    "pmap": ("volume_files", "pmap"),
}
#: Why a format does not apply to a source, for the summary line.
NOT_APPLICABLE = {
    "nifti": "plain images carry no physical geometry",
    "dicom-seg": "a DICOM SEG needs a DICOM source",
    "pmap": "a Parametric Map needs a DICOM source",
}


def _written(entries: Sequence[Mapping[str, Any]], fmt: str) -> bool:
    where, key = _FILE_KEYS[fmt]
    return any(key in entry.get(where, {}) for entry in entries)


def _any_written(entries: Sequence[Mapping[str, Any]], formats: Sequence[str]) -> bool:
    return any(_written(entries, fmt) for fmt in formats)


def _by_format(
    sources: Mapping[str, Sequence[Mapping[str, Any]]], formats: Sequence[str], skips: _Skips
) -> dict[str, dict[str, int]]:
    """Per asked format, how many sources got it (``written``), failed (``skipped``) or are of a kind it does
    not apply to (``not_applicable``: NIfTI of a plain image, SEG / Parametric Map of a non-DICOM source)."""
    counts = {fmt: {"written": 0, "skipped": 0, "not_applicable": 0} for fmt in formats}
    for path, entries in sources.items():
        for fmt in formats:
            if fmt in skips.failed.get(path, ()) or not entries:
                counts[fmt]["skipped"] += 1
            else:
                counts[fmt]["written" if _written(entries, fmt) else "not_applicable"] += 1
    return counts


def _format_part(fmt: str, counts: Mapping[str, int]) -> str:
    part = f"{fmt} {counts['written']}"
    if counts["skipped"]:
        part += f", {counts['skipped']} skipped"
    if counts["not_applicable"]:
        part += f", not applicable to {counts['not_applicable']} ({NOT_APPLICABLE.get(fmt, 'see export.json')})"
    return part


def _read_report(out_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, int]], bool]:
    """``export.json``, its per-format counts in the asked order, and whether no asked format was written at all."""
    report = json.loads((Path(out_dir) / "export.json").read_text())
    counted = report.get("by_format", {})
    by_format = {fmt: counted[fmt] for fmt in report["formats"] if fmt in counted}  # JSON keys come back sorted
    nothing = bool(by_format) and report["summary"]["sources"] > 0 and not any(c["written"] for c in by_format.values())
    return report, by_format, nothing


def export_summary(out_dir: str | Path) -> tuple[str, bool]:
    """Return an export's summary line and whether the export is incomplete (exit code 2).

    The line says how many sources were written, per asked format how many got it, were skipped or are of a
    kind the format does not apply to, and which cases have an empty mask. The export is incomplete when a
    source was skipped, or when no asked format could be written for any source (:func:`export_notices` words
    that as the error).
    """
    report, by_format, nothing = _read_report(out_dir)
    summary = report["summary"]
    line = f"{summary['written']} of {summary['sources']} sources written"
    if by_format:
        line += " (" + "; ".join(_format_part(fmt, counts) for fmt, counts in by_format.items()) + ")"
    series = [r for r in report.get("volumes", []) if r.get("export") == "series"]
    if series:  # the counts above are per source file; a series' files share one object per format
        files = sum(int(r["files"]) for r in series)
        line += f"; {files} of them as {len(series)} series, one object per format each"
    if summary["skipped"]:
        line += f"; {summary['skipped']} skipped, listed with the reason in {Path(out_dir) / 'skipped.csv'}"
    empty = report.get("empty_masks", [])
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        line += f"; empty mask (no pixel at or above the threshold) in {len(empty)} case(s): {shown}"
    return line, bool(summary["skipped"]) or nothing


def export_notices(out_dir: str | Path) -> tuple[list[str], str | None]:
    """What the CLI says beside the summary: one warning per asked format that does not apply to some sources
    (so a user who asked for a DICOM SEG of PNG images is told it was not written), and the error when no asked
    format applies to any source (only ``export.json`` was written)."""
    report, by_format, nothing = _read_report(out_dir)
    sources = report["summary"]["sources"]
    if nothing:
        why = "; ".join(f"{fmt}: {NOT_APPLICABLE.get(fmt, 'see export.json')}" for fmt in by_format)
        return [], (
            f"none of the formats asked for ({','.join(by_format)}) applies to these {sources} sources ({why}), so "
            f"{Path(out_dir) / 'export.json'} is all that was written; export them with --format png"
        )
    warnings = [
        f"{fmt} was not written for {counts['not_applicable']} of {sources} sources: "
        f"{NOT_APPLICABLE.get(fmt, 'see export.json')}"
        for fmt, counts in by_format.items()
        if counts["not_applicable"]
    ]
    if not report.get("per_file"):
        warnings += [
            fallback_note(r["volume_id"], r["problems"])
            for r in report.get("volumes", [])
            if r.get("export") == "per-file" and r["problems"]
        ]
    return warnings, None


def export_run(
    run_dir: str | Path,
    *,
    formats: str | Sequence[str] = ("png",),
    threshold: str | Threshold = "fixed:0.5",
    deidentify: bool = False,
    out_dir: str | Path | None = None,
    manifest_path: str | Path | None = None,
    overwrite: bool = False,
    per_file: bool = False,
) -> Path:
    """Export a predictions folder given plain options (what ``medad export`` and ``medad score --export`` call).

    Args:
        run_dir: the predictions folder.
        formats: ``"png,nifti,dicom-seg,pmap"`` or a sequence.
        threshold: a :class:`Threshold` or a spec (see :func:`medad.export.resolve_threshold`).
        deidentify: de-identify DICOM exports.
        out_dir: export folder (default ``RUN_DIR/export``).
        manifest_path: manifest file when ``run_dir`` holds none.
        overwrite: replace an existing non-empty export folder.
        per_file: one set of SEG / Parametric Map / NIfTI files per source file, not per DICOM series.

    Returns:
        The export folder.
    """
    formats = parse_formats(formats)
    manifest = manifest_for_run(run_dir, manifest_path)
    if isinstance(threshold, str):
        threshold = resolve_threshold(threshold, run_dir=run_dir, manifest=manifest)
    target = Path(out_dir) if out_dir is not None else Path(run_dir) / "export"
    return export_predictions(
        predictions_folder(run_dir),
        manifest,
        target,
        formats=formats,
        threshold=threshold,
        deidentify=deidentify,
        overwrite=overwrite,
        per_file=per_file,
    )
