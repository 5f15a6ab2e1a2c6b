"""A multi-slice DICOM series over DIMSE is one volume: fetched from Orthanc's DICOM port, exported as one binary
SEG, one fractional SEG and one Parametric Map series, stored back with C-STORE and found there by dcmtk's findscu
(the DICOMweb twin: tests/dicomweb/test_roundtrip.py::test_a_series_round_trips_as_one_seg_series)."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.dimse.conftest import OrthancDimse, StoreScp
from tests.dimse.test_roundtrip import PMAP_CLASS, SEG_CLASS, _findscu_series, _score
from tests.export.series_files import write_series


def _upload_series(orthanc: OrthancDimse, folder: Path, seed: int) -> tuple[str, dict[str, list[float]]]:
    """Upload a 4-slice oblique series (shuffled file names); its StudyInstanceUID and SOPInstanceUID -> position."""
    paths = write_series(folder, n=4, shape=(32, 32), seed=seed)
    positions = {}
    for path in paths:
        orthanc.rest("/instances", "POST", data=path.read_bytes())
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        positions[str(ds.SOPInstanceUID)] = [float(v) for v in ds.ImagePositionPatient]
    return str(ds.StudyInstanceUID), positions


def _stored_results(orthanc: OrthancDimse, study: str, folder: Path) -> dict[str, list[Path]]:
    """The study's SEG / Parametric Map files as Orthanc holds them, by SeriesInstanceUID (written into ``folder``)."""
    found: dict[str, list[Path]] = {}
    folder.mkdir()
    for series in orthanc.rest(f"/studies/{orthanc.study_id(study)}/series"):
        for instance in series["Instances"]:
            tags = orthanc.rest(f"/instances/{instance}/simplified-tags")
            if tags["SOPClassUID"] in (SEG_CLASS, PMAP_CLASS):
                path = folder / f"{instance}.dcm"
                path.write_bytes(orthanc.rest(f"/instances/{instance}/file"))
                found.setdefault(tags["SeriesInstanceUID"], []).append(path)
    return found


def _kind(path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return f"seg-{ds.SegmentationType}" if ds.SOPClassUID == SEG_CLASS else "pmap"


def _frames_on_their_slices(path: Path, positions: dict[str, list[float]]) -> None:
    """highdicom reads the object back; each of its frames references one slice and lies on it."""
    ds = pydicom.dcmread(path)
    back = hd.seg.segread(path) if ds.SOPClassUID == SEG_CLASS else hd.pm.ParametricMap.from_dataset(ds)
    frames = back.PerFrameFunctionalGroupsSequence
    assert int(back.NumberOfFrames) == len(frames) == 4
    refs = [str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID) for f in frames]
    assert sorted(refs) == sorted(positions)  # every slice once
    for frame, ref in zip(frames, refs, strict=True):
        where = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(where, positions[ref], atol=1e-4)
    series = back.ReferencedSeriesSequence
    listed = {str(r.ReferencedSOPInstanceUID) for s in series for r in s.ReferencedInstanceSequence}
    assert listed == set(positions)


@pytest.mark.slow
def test_a_series_round_trips_as_one_seg_series_over_dimse(orthanc_dimse, tmp_path, monkeypatch, capsys) -> None:
    study, positions = _upload_series(orthanc_dimse, tmp_path / "series", seed=11)
    export = ["--export", "dicom-seg,pmap", "--to", orthanc_dimse.dicom_url()]
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), tmp_path / "run", *export)
    assert code == 0, text
    assert "scored 4 images" in text and "stored 3 DICOM object(s) on ORTHANC@127.0.0.1:" in text
    assert study not in text

    modalities = sorted(m for m, _ in _findscu_series(orthanc_dimse, study))
    assert modalities == ["CT", "OT", "SEG", "SEG"]  # dcmtk sees the source and medad's three series
    stored = _stored_results(orthanc_dimse, study, tmp_path / "back")
    assert sorted(len(files) for files in stored.values()) == [1, 1, 1]  # one object per series
    paths = [files[0] for files in stored.values()]
    assert sorted(_kind(p) for p in paths) == ["pmap", "seg-BINARY", "seg-FRACTIONAL"]
    for path in paths:
        _frames_on_their_slices(path, positions)


@pytest.mark.slow
def test_a_rerun_with_per_file_exports_and_stores_per_file(
    orthanc_dimse, storescp: StoreScp, tmp_path, monkeypatch, capsys
) -> None:
    study, _ = _upload_series(orthanc_dimse, tmp_path / "series", seed=12)
    out, export = tmp_path / "run", ["--export", "dicom-seg,pmap", "--to", storescp.url]
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), out, *export)
    assert code == 0 and "stored 3 DICOM object(s)" in text, text
    assert not json.loads((out / "export" / "export.json").read_text())["per_file"]

    # the same command with --per-file: a finished per-series export must not be sent again as if it were per file
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), out, *export, "--per-file")
    assert code == 0, text
    assert json.loads((out / "export" / "export.json").read_text())["per_file"]
    assert "stored 12 DICOM object(s)" in text  # 4 files x (binary SEG, fractional SEG, Parametric Map)
    assert len([p for p in storescp.folder.iterdir() if p.is_file()]) == 3 + 12
