"""A DICOM series exported as one volume, checked by readers medad did not write: SimpleITK's series reader,
highdicom's SEG reader and dciodvfy; irregular series fall back to per-file export with a named note."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medad.data.dicom import make_dicom
from medad.export import export_notices, export_predictions, fixed_threshold
from tests.export.conftest import dciodvfy_errors, needs_dciodvfy
from tests.export.series_files import PATIENT_ID, PATIENT_NAME, enhanced_from, write_series

sitk = pytest.importorskip("SimpleITK")
TESTDATA = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
FORMATS = ("nifti", "dicom-seg", "pmap")


def _marked(shape: tuple[int, int], k: int) -> np.ndarray:
    """Slice ``k``'s map: 0.1 everywhere, 0.9 at one pixel that differs per slice."""
    out = np.full(shape, 0.1, np.float32)
    out[(k + 1) % shape[0], (2 * k + 3) % shape[1]] = 0.9
    return out


def _export(tmp_path: Path, source: Path, make_run, order: list[Path] | None = None, **options: Any) -> Path:
    """Score ``source`` (a series folder or file) with maps marking slice ``k`` (its place in ``order``, else its
    frame) and export it; returns the export folder."""
    manifest = make_dicom(source)
    maps = []
    for _, row in manifest.iterrows():
        ds = pydicom.dcmread(row["image_path"], stop_before_pixels=True)
        k = order.index(Path(row["image_path"])) if order else int(row["frame"])
        maps.append(_marked((int(ds.Rows), int(ds.Columns)), k))
    preds, manifest = make_run(manifest.to_dict("records"), maps, name=f"preds-{source.name}")
    out = export_predictions(
        preds, manifest, tmp_path / f"export-{source.name}", formats=FORMATS, threshold=fixed_threshold(0.5),
        **options,
    )  # fmt: skip
    return out


@pytest.fixture
def series_export(tmp_path: Path, make_run) -> tuple[Path, list[Path], dict]:
    paths = write_series(tmp_path / "series", n=5, seed=7)
    out = _export(tmp_path, tmp_path / "series", make_run, order=paths)
    return out, paths, json.loads((out / "export.json").read_text())


def test_one_seg_pmap_and_nifti_per_series(series_export) -> None:
    out, _, report = series_export
    (volume,) = report["volumes"]
    assert volume["export"] == "series" and volume["slices"] == 5 and volume["files"] == 5
    stem = volume["volume_id"]
    objects = sorted(f"{stem}{suffix}" for suffix in ("_pmap.dcm", "_seg.dcm", "_seg_fractional.dcm"))
    assert sorted(p.name for p in out.glob("*.dcm")) == objects
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{stem}_heatmap.nii.gz", f"{stem}_mask.nii.gz"]
    assert {c["volume_case"] for c in report["cases"]} == {stem} and len(volume["cases"]) == 5
    assert report["summary"] == {"sources": 5, "written": 5, "skipped": 0}


def test_simpleitk_series_and_medad_nifti_agree_on_geometry_and_voxels(series_export, tmp_path: Path) -> None:
    out, paths, report = series_export
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(tmp_path / "series"))
    reader.SetFileNames(names)
    source = reader.Execute()
    stem = report["volumes"][0]["volume_id"]
    mask = sitk.ReadImage(str(out / f"{stem}_mask.nii.gz"))
    assert mask.GetSize() == source.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), source.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), source.GetDirection(), atol=1e-4)
    marked = np.argwhere(sitk.GetArrayFromImage(mask) > 0)  # (slice, row, column) in ITK's array order
    assert len(marked) == 5
    for z, r, c in marked:
        point = mask.TransformIndexToPhysicalPoint((int(c), int(r), int(z)))
        k = paths.index(Path(names[int(z)]))  # the slice SimpleITK put at z, as written
        expected = source.TransformIndexToPhysicalPoint((int((2 * k + 3) % 10), int((k + 1) % 12), int(z)))
        np.testing.assert_allclose(point, expected, atol=1e-4)


def test_highdicom_reads_each_seg_frame_as_its_source_slice(series_export) -> None:
    out, paths, report = series_export
    stem = report["volumes"][0]["volume_id"]
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]
    for name in (f"{stem}_seg.dcm", f"{stem}_seg_fractional.dcm"):
        seg = hd.seg.segread(out / name)
        assert {uid for _, _, uid in seg.get_source_image_uids()} == set(uids)
        for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            k = uids.index(source_uid)
            frame = seg.pixel_array[i] if seg.pixel_array.ndim == 3 else seg.pixel_array
            assert np.argwhere(frame > frame.min()).tolist() == [[(k + 1) % 12, (2 * k + 3) % 10]], name
    pmap = pydicom.dcmread(out / f"{stem}_pmap.dcm")
    assert int(pmap.NumberOfFrames) == 5
    refs = {s.ReferencedSOPInstanceUID for item in pmap.PerFrameFunctionalGroupsSequence
            for s in item.DerivationImageSequence[0].SourceImageSequence}  # fmt: skip
    assert refs == set(uids)


@needs_dciodvfy
def test_series_objects_pass_dciodvfy(series_export) -> None:
    out, _, _ = series_export
    for path in sorted(out.glob("*.dcm")):
        assert dciodvfy_errors(path) == [], path.name


@pytest.mark.parametrize(
    ("kwargs", "problem"), [({"missing": [2]}, "a gap of"), ({"sizes": {1: (12, 11)}}, "mixed sizes")]
)
def test_irregular_series_falls_back_to_per_file_with_a_named_note(tmp_path: Path, make_run, kwargs, problem) -> None:
    paths = write_series(tmp_path / "bad", n=5, **kwargs)
    out = _export(tmp_path, tmp_path / "bad", make_run, order=paths)
    report = json.loads((out / "export.json").read_text())
    (volume,) = report["volumes"]
    assert volume["export"] == "per-file" and any(problem in p for p in volume["problems"])
    assert len(list(out.glob("*_seg.dcm"))) == len(paths) == len(list(out.glob("*_mask.nii.gz")))
    assert all(any(problem in n and "exported one object per file" in n for n in c["notes"]) for c in report["cases"])
    warnings, error = export_notices(out)
    assert error is None and any(volume["volume_id"] in w and problem in w for w in warnings)


def test_per_file_option_keeps_one_object_per_file(tmp_path: Path, make_run) -> None:
    paths = write_series(tmp_path / "s", n=3)
    out = _export(tmp_path, tmp_path / "s", make_run, order=paths, per_file=True)
    report = json.loads((out / "export.json").read_text())
    assert report["per_file"] and report["volumes"][0]["export"] == "per-file"
    assert len(list(out.glob("*_seg.dcm"))) == 3 and export_notices(out) == ([], None)


def test_enhanced_multiframe_nifti_runs_along_the_normal(tmp_path: Path, make_run) -> None:
    paths = write_series(tmp_path / "s", n=4)
    (tmp_path / "enh").mkdir()
    enhanced = enhanced_from(paths[::-1], tmp_path / "enh" / "enhanced.dcm")  # frames stored last slice first
    out = _export(tmp_path, enhanced, make_run)
    report = json.loads((out / "export.json").read_text())
    (volume,) = report["volumes"]
    assert volume["kind"] == "dicom-multiframe" and volume["export"] == "file"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    source = reader.Execute()
    mask = sitk.ReadImage(str(out / volume["outputs"]["nifti_mask"]))
    np.testing.assert_allclose(mask.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), source.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), source.GetSpacing(), atol=1e-4)
    array = sitk.GetArrayFromImage(mask)  # frame f of the enhanced object is slice 3 - f; its map marks frame f
    for f in range(4):
        assert np.argwhere(array[3 - f]).tolist() == [[(f + 1) % 12, (2 * f + 3) % 10]]


def test_real_pydicom_series_exports_as_one_volume_matching_simpleitk(tmp_path: Path, make_run) -> None:
    shutil.copytree(TESTDATA / "98892001" / "CT5N", tmp_path / "ct")
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(tmp_path / "ct"))
    reader.SetFileNames(names)
    source = reader.Execute()
    out = _export(tmp_path, tmp_path / "ct", make_run, order=[Path(n) for n in names])
    report = json.loads((out / "export.json").read_text())
    (volume,) = report["volumes"]
    assert volume["export"] == "series"
    mask = sitk.ReadImage(str(out / volume["outputs"]["nifti_mask"]))
    np.testing.assert_allclose(mask.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), source.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), source.GetDirection(), atol=1e-4)
    marked = sorted(map(tuple, np.argwhere(sitk.GetArrayFromImage(mask) > 0).tolist()))
    assert marked == [(k, (k + 1) % 16, (2 * k + 3) % 16) for k in range(5)]


def test_cli_warns_of_a_fallback_and_per_file_silences_it(tmp_path: Path, make_run, monkeypatch, capsys) -> None:
    from tests.cli import run_medad

    paths = write_series(tmp_path / "gap", n=4, missing=[1])
    manifest = make_dicom(tmp_path / "gap")
    maps = [_marked((12, 10), paths.index(Path(p))) for p in manifest["image_path"]]
    preds, _ = make_run(manifest.to_dict("records"), maps)
    code, said = run_medad(monkeypatch, capsys, "export", str(preds), "--format", "nifti,dicom-seg", "--out",
                           str(tmp_path / "a"))  # fmt: skip
    assert code == 0 and "warning: series volume-" in said and "a gap of 5 mm" in said and "--per-file" in said
    assert str(tmp_path) not in said.split("export written to")[1].split("\n", 1)[1]  # no source path in warnings
    code, said = run_medad(monkeypatch, capsys, "export", str(preds), "--format", "nifti,dicom-seg", "--out",
                           str(tmp_path / "b"), "--per-file")  # fmt: skip
    assert code == 0 and "warning:" not in said
    assert json.loads((tmp_path / "b" / "export.json").read_text())["per_file"] is True
    code, said = run_medad(monkeypatch, capsys, "export", "--help")
    assert "--per-file" in said


def test_deidentified_series_objects_hide_the_patient_and_agree_on_references(tmp_path: Path, make_run) -> None:
    paths = write_series(tmp_path / "s", n=3)
    out = _export(tmp_path, tmp_path / "s", make_run, order=paths, deidentify=True)
    source_uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}
    references = []
    for path in sorted(out.glob("*.dcm")):
        data = path.read_bytes()
        assert PATIENT_NAME.encode() not in data and PATIENT_ID.encode() not in data
        ds = pydicom.dcmread(path)
        refs = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
        assert len(refs) == 3 and not refs & source_uids  # pseudonymous, and the same in every object
        references.append(refs)
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(path) == [], path.name
    assert len(references) == 3 and references[0] == references[1] == references[2]


def test_a_slice_without_a_prediction_is_zeros_in_the_series_objects(tmp_path: Path, make_run) -> None:
    paths = write_series(tmp_path / "s", n=4)
    manifest = make_dicom(tmp_path / "s")
    maps = [_marked((12, 10), paths.index(Path(p))) for p in manifest["image_path"][:3]]  # the last row unscored
    preds, manifest = make_run(manifest.to_dict("records"), maps)
    out = export_predictions(preds, manifest, tmp_path / "out", formats=FORMATS, threshold=fixed_threshold(0.5))
    report = json.loads((out / "export.json").read_text())
    (volume,) = report["volumes"]
    assert volume["export"] == "series" and volume["slices"] == 4 and len(volume["cases"]) == 3
    assert all("1 of 4 slices have no prediction" in " ".join(c["notes"]) for c in report["cases"])
    seg = hd.seg.segread(out / volume["outputs"]["seg"])
    assert int(seg.NumberOfFrames) == 4 and int(np.count_nonzero(seg.pixel_array)) == 3


def test_summary_says_a_series_files_share_one_object_per_format(tmp_path: Path, make_run, monkeypatch, capsys) -> None:
    """The per-source counts of the summary line are of files: it says how many of them became one series object."""
    from tests.cli import run_medad

    paths = write_series(tmp_path / "s", n=4)
    manifest = make_dicom(tmp_path / "s")
    maps = [_marked((12, 10), paths.index(Path(p))) for p in manifest["image_path"]]
    preds, _ = make_run(manifest.to_dict("records"), maps)
    code, said = run_medad(monkeypatch, capsys, "export", str(preds), "--format", "dicom-seg", "--out",
                           str(tmp_path / "a"))  # fmt: skip
    assert code == 0 and "4 of them as 1 series, one object per format each" in said, said
    code, said = run_medad(monkeypatch, capsys, "export", str(preds), "--format", "dicom-seg", "--out",
                           str(tmp_path / "b"), "--per-file")  # fmt: skip
    assert code == 0 and "as 1 series" not in said
