"""No patient identifiers outside DICOM objects meant to carry them; bad inputs fail cleanly (exit 2)."""

from __future__ import annotations

import gzip
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
    ds = pydicom.dcmread(dicom_sources["ct"])
    del ds.PixelSpacing
    del ds.FrameOfReferenceUID
    ds.save_as(tmp_path / "broken.dcm")
    preds, manifest = make_run([manifest_row(tmp_path / "broken.dcm", "dicom", frame=0)], [blob((128, 128), (5, 5), 3)])
    with pytest.raises(ExportError, match="lacks FrameOfReferenceUID, PixelSpacing") as info:
        export_predictions(
            preds, manifest, tmp_path / "out", formats=("png", "dicom-seg"), threshold=fixed_threshold(0.5)
        )
    assert CT_ID not in str(info.value) and CT_NAME not in str(info.value)
    _nothing_left(tmp_path, "out")


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
