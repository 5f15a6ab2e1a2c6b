"""Series as volumes in an export: which DICOM series become one SEG / Parametric Map / NIfTI volume, which fall
back to one object per file (and why), and the ``volumes`` record of ``export.json``.

A DICOM series of several single-frame files whose slices make one regular grid (see
:mod:`medad.data.series`) is exported as one object of each kind, its frames in slice order along the normal and
its NIfTI affine the series geometry. A series with a problem (a gap, duplicates, mixed orientations or sizes,
no geometry) is exported per file, with a note naming the problem. An enhanced or legacy multi-frame object is
one file already; its NIfTI volume is written in slice order with the volume's geometry when its frames make a
regular grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medad.data.series import Volume, group_volumes


@dataclass
class SeriesExport:
    """A regular multi-file DICOM series exported as one: its slices as (source path, frame) in slice order."""

    volume: Volume
    slices: list[tuple[str, int]]
    record: dict[str, Any]

    @property
    def paths(self) -> list[str]:
        """The series' source files in slice order."""
        return [path for path, _ in self.slices]


@dataclass
class VolumePlan:
    """How an export writes its DICOM / NIfTI sources: series exported as one, per-file fallbacks with their note,
    multi-frame files written in slice order, and each manifest index's volume id."""

    series: list[SeriesExport] = field(default_factory=list)
    fallback: dict[str, str] = field(default_factory=dict)
    ordered: dict[str, tuple[list[int], np.ndarray]] = field(default_factory=dict)
    volume_of: dict[int, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def _frame(value: Any) -> int:
    return 0 if value is None or pd.isna(value) else int(value)


def fallback_note(volume_id: str, problems: Iterable[str]) -> str:
    """The note (and warning) of a series exported per file: which series and what is wrong with it."""
    return (
        f"series {volume_id} exported one object per file, not as one volume: {'; '.join(problems)} "
        "(check the series is complete and unmixed, or pass --per-file to silence this)"
    )


def plan_volumes(manifest: pd.DataFrame, paths: Iterable[str], per_file: bool, *, write: bool = True) -> VolumePlan:
    """Plan the volumes of the DICOM / NIfTI source files ``paths`` (those with an exported prediction).

    Every DICOM / NIfTI row of the manifest takes part, so a slice of such a series without a prediction is
    written as zeros (noted), and a slice missing from the manifest leaves a gap. With ``per_file`` every file is
    its own object, as before series were grouped. Without ``write`` (no volume format asked, e.g. a PNG-only
    export) the volumes are only grouped, for the cases' volume ids and the gallery: nothing is planned for
    writing and the records have no ``export`` / ``outputs``.
    """
    wanted = set(paths)
    rows = manifest[manifest["source_format"].astype(str).isin(("dicom", "nifti"))] if wanted else manifest[:0]
    plan = VolumePlan()
    for volume in group_volumes(rows):
        slices = [(str(rows.loc[i, "image_path"]), _frame(rows.loc[i, "frame"])) for i in volume.indices]
        files = list(dict.fromkeys(path for path, _ in slices))
        if wanted.isdisjoint(files):  # nothing of it was predicted: not part of this export
            continue
        plan.volume_of.update({i: volume.volume_id for i in volume.indices})
        record = _record(volume, files)
        plan.records.append(record)
        if write:
            _plan_writing(plan, volume, slices, record, per_file)
    return plan


def _plan_writing(
    plan: VolumePlan, volume: Volume, slices: list[tuple[str, int]], record: dict[str, Any], per_file: bool
) -> None:
    """Add how one volume's objects are written to ``plan`` and its ``export`` / ``outputs`` to its record."""
    files = list(dict.fromkeys(path for path, _ in slices))
    several = volume.kind == "dicom-series" and len(files) > 1
    export = "file" if not several else "series" if volume.regular and not per_file else "per-file"
    record.update(export=export, outputs={})
    if export == "series":
        plan.series.append(SeriesExport(volume, slices, record))
    elif export == "per-file" and not per_file:
        plan.fallback.update(dict.fromkeys(files, fallback_note(volume.volume_id, volume.problems)))
    elif volume.kind == "dicom-multiframe" and volume.regular and (affine := volume.affine()) is not None:
        plan.ordered[files[0]] = ([frame for _, frame in slices], affine)


def _record(volume: Volume, files: list[str]) -> dict[str, Any]:
    """The ``export.json`` record of a volume; :func:`_plan_writing` adds ``export``: ``series`` (one object over
    several files), ``per-file`` (several files, one object each) or ``file`` (the volume is one file)."""
    return {
        "volume_id": volume.volume_id,
        "kind": volume.kind,
        "slices": len(volume.indices),
        "files": len(files),
        "problems": list(volume.problems),
        "size": list(volume.size) if volume.size else None,
        "spacing": list(volume.spacing) if volume.spacing else None,
        "cases": [],
    }
