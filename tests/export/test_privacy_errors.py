"""No patient identifiers outside DICOM objects meant to carry them; bad inputs fail cleanly (exit 2)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medad import cli
from medad.errors import ExportError
from medad.export import export_predictions, fixed_threshold
from tests.export.conftest import CT_ID, CT_NAME, blob, manifest_row

SECRETS = (CT_NAME.encode(), CT_ID.encode(), b"CompressedSamples")
ALL = "png,nifti,dicom-seg,pmap"


def _leaks(out: Path, text: str) -> dict[str, list[bytes]]:
    """Every place (file content, decompressed content, PNG text, file name, captured text) holding a secret."""
    found: dict[str, list[bytes]] = {}
    blobs = {"<captured>": text.encode()}
    for path in out.rglob("*"):
        blobs[f"name:{path.name}"] = str(path.relative_to(out)).encode()
        if path.is_file():
            data = path.read_bytes()
            blobs[path.name] = data + (gzip.decompress(data) if path.name.endswith(".gz") else b"")
            if path.suffix == ".png":
                blobs[f"text:{path.name}"] = repr(Image.open(path).text).encode()
    for where, data in blobs.items():
        hits = [s for s in SECRETS if s in data]
        if hits:
            found[where] = hits
    return found


@pytest.mark.parametrize("deidentify", [False, True])
def test_identifiers_only_inside_identified_dicom_objects(
    tmp_path, dicom_sources, make_run, caplog, capsys, monkeypatch, deidentify
) -> None:
    preds, _ = make_run([manifest_row(dicom_sources["ct"], "dicom", frame=0)], [blob((128, 128), (40, 70), 10)])
    out = tmp_path / "export"
    argv = ["medad", "export", str(preds), "--format", ALL, "--out", str(out), "--threshold", "fixed:0.4"]
    monkeypatch.setattr(sys, "argv", argv + (["--deidentify"] if deidentify else []))
    with caplog.at_level(logging.DEBUG), pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0
    captured = capsys.readouterr()
    leaks = _leaks(out, caplog.text + captured.out + captured.err)
    dicom_files = {p.name for p in out.glob("*.dcm")}
    assert len(dicom_files) == 3
    if deidentify:
        assert leaks == {}
    else:
        assert set(leaks) == dicom_files
        assert all(pydicom.dcmread(out / name).PatientID == CT_ID for name in dicom_files)


def _nothing_left(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_map_size_mismatch_leaves_nothing(tmp_path, dicom_sources, make_run, png_source) -> None:
    rows = [manifest_row(png_source("ok.png", (16, 16)), "image"), manifest_row(dicom_sources["ct"], "dicom", frame=0)]
    preds, manifest = make_run(rows, [np.zeros((16, 16), np.float32), np.zeros((64, 64), np.float32)])
    with pytest.raises(ExportError, match=r"64x64 but its source image is 128x128"):
        export_predictions(preds, manifest, tmp_path / "out", formats=("png",), threshold=fixed_threshold(0.5))
    _nothing_left(tmp_path, "out")


def test_dicom_without_seg_attributes(tmp_path, dicom_sources, make_run) -> None:
    """A DICOM source lacking what SEG needs is skipped with the reason (it used to abort the whole export)."""
    ds = pydicom.dcmread(dicom_sources["ct"])
    del ds.PixelSpacing
    del ds.FrameOfReferenceUID
    ds.save_as(tmp_path / "broken.dcm")
    preds, manifest = make_run([manifest_row(tmp_path / "broken.dcm", "dicom", frame=0)], [blob((128, 128), (5, 5), 3)])
    out = export_predictions(
        preds, manifest, tmp_path / "out", formats=("png", "dicom-seg"), threshold=fixed_threshold(0.5)
    )
    skipped = (out / "skipped.csv").read_text()
    assert "lacks FrameOfReferenceUID, PixelSpacing" in skipped
    assert CT_ID not in skipped and CT_NAME not in skipped and "broken" not in skipped
    assert not list(out.glob("*.dcm")) and len(list(out.glob("*_overlay.png"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def _secondary_capture(ct: Path, target: Path) -> Path:
    """A secondary-capture copy of a CT: no Frame of Reference, no plane geometry."""
    ds = pydicom.dcmread(ct)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, keyword)
    ds.ConversionType = "WSD"
    ds.save_as(target)
    return target


def test_unexportable_sources_never_abort_the_others(tmp_path, dicom_sources, make_run, monkeypatch, capsys) -> None:
    secret_dir = tmp_path / "Doe_Jane_1970"
    secret_dir.mkdir()
    sc = _secondary_capture(dicom_sources["ct"], secret_dir / "sc_Doe.dcm")
    ds = pydicom.dcmread(dicom_sources["ct"])
    del ds.FrameOfReferenceUID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(secret_dir / "noframe_Doe.dcm")
    rows = [manifest_row(p, "dicom", frame=0) for p in (dicom_sources["ct"], sc, secret_dir / "noframe_Doe.dcm")]
    preds, _ = make_run(rows, [blob((128, 128), (40, 70), 10)] * 3)
    out = tmp_path / "export"
    argv = ["medad", "export", str(preds), "--format", ALL, "--out", str(out), "--threshold", "fixed:0.4"]
    monkeypatch.setattr(sys, "argv", [*argv, "--deidentify"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert "1 of 3 sources written" in captured.out and "2 skipped" in captured.out
    assert "nifti 3" in captured.out and "dicom-seg 2, 1 skipped" in captured.out
    assert "pmap 1, 2 skipped" in captured.out
    assert "Doe" not in captured.err + captured.out and str(secret_dir) not in captured.err  # case ids only
    report = json.loads((out / "export.json").read_text())
    assert report["summary"] == {"sources": 3, "written": 1, "skipped": 2}
    with (out / "skipped.csv").open() as handle:
        skipped = list(csv.DictReader(handle))
    by_case = {row["case_id"]: row for row in skipped}
    cases = {c["index"]: c["case_id"] for c in report["cases"]}
    assert by_case[cases[1]]["formats"] == "pmap" and "Frame of Reference" in by_case[cases[1]]["reason"]
    assert by_case[cases[2]]["formats"] == "dicom-seg,pmap"  # its NIfTI needs no Frame of Reference: kept
    assert f"skipped dicom-seg,pmap of case {cases[2]}" in captured.err
    assert "lacks FrameOfReferenceUID" in by_case[cases[2]]["reason"]
    assert len(list(out.glob(f"{cases[0]}_*.dcm"))) == 3 and len(list(out.glob(f"{cases[1]}_seg*.dcm"))) == 2
    assert len(list(out.glob("*_overlay.png"))) == 3 and len(list(out.glob(f"{cases[2]}_*.nii.gz"))) == 2
    assert report["by_format"]["nifti"] == {"written": 3, "skipped": 0, "not_applicable": 0}
    for path in out.rglob("*"):
        assert "Doe" not in path.name
        assert b"Doe" not in path.read_bytes() and str(tmp_path).encode() not in path.read_bytes()


def test_unwritable_output_exits_2(tmp_path, make_run, png_source, monkeypatch, capsys) -> None:
    preds, _ = make_run([manifest_row(png_source("a.png", (8, 8)), "image")], [np.zeros((8, 8), np.float32)])
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    monkeypatch.setattr(sys, "argv", ["medad", "export", str(preds), "--out", str(blocker / "export")])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the export folder") and "Traceback" not in err
    assert err.count("\n") == 1
    monkeypatch.setattr(sys, "argv", ["medad", "export", str(tmp_path / "nowhere"), "--manifest", "x.csv"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2 and "--manifest" in capsys.readouterr().err


def test_a_non_nifti_volume_keeps_its_pngs_and_its_nifti_export_is_skipped_with_the_reason(tmp_path, make_run) -> None:
    import nibabel as nib

    volume = np.random.default_rng(0).random((12, 10, 2)).astype(np.float32)
    analyze, real = tmp_path / "analyze.img", tmp_path / "real.nii.gz"
    nib.save(nib.AnalyzeImage(volume, np.eye(4)), analyze)  # an Analyze 7.5 pair: no sform / qform
    nib.save(nib.Nifti1Image(volume, np.eye(4)), real)
    rows = [manifest_row(p, "nifti", frame=k, axis=2) for p in (analyze, real) for k in range(2)]
    preds, manifest = make_run(rows, [blob((12, 10), (5, 5), 3)] * 4)
    out = export_predictions(
        preds, manifest, tmp_path / "export", formats=("png", "nifti"), threshold=fixed_threshold(0.5)
    )
    report = json.loads((out / "export.json").read_text())
    assert report["summary"] == {"sources": 2, "written": 1, "skipped": 1}
    assert len(list(out.glob("*_overlay.png"))) == 4  # the PNGs of every slice, the Analyze ones included
    (skipped,) = report["skipped"]
    assert skipped["formats"] == "nifti" and "AnalyzeImage, not NIfTI" in skipped["reason"]
    assert len(list(out.glob("*_mask.nii.gz"))) == 1
