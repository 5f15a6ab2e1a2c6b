"""What an export says it wrote: per-format counts, formats that do not apply, empty masks, random weights in
the DICOM objects, and exit 2 when nothing asked for could be written."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medad import cli
from medad.export import export_predictions, export_summary, fixed_threshold
from tests.export.conftest import blob, manifest_row

RANDOM_META = {"model": {"name": "ad_dinov3_tiny", "random_weights": True}, "random_weights": True}


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["medad", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def test_volume_formats_on_plain_images_say_not_applicable_and_exit_2(
    tmp_path: Path, make_run, png_source, monkeypatch, capsys
) -> None:
    rows = [manifest_row(png_source(f"p{i}.png", (16, 16)), "image") for i in range(3)]
    preds, _ = make_run(rows, [blob((16, 16), (8, 8), 4)] * 3)
    out = tmp_path / "export"
    args = ("export", str(preds), "--format", "nifti,dicom-seg,pmap", "--out", str(out))
    code, stdout, stderr = _cli(monkeypatch, capsys, *args)
    assert code == 2
    assert "0 of 3 sources written" in stdout
    assert "nifti 0, not applicable to 3 (plain images carry no physical geometry)" in stdout
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "none of the formats asked for (nifti,dicom-seg,pmap) applies" in errors[0]
    assert "--format png" in errors[0] and "warning:" not in stderr  # the error says it all, once
    report = json.loads((out / "export.json").read_text())
    assert report["by_format"]["pmap"] == {"written": 0, "skipped": 0, "not_applicable": 3}
    assert report["summary"] == {"sources": 3, "written": 0, "skipped": 0}


def test_a_format_that_does_not_apply_to_some_sources_is_a_warning_naming_it(
    tmp_path: Path, make_run, png_source, monkeypatch, capsys
) -> None:
    preds, _ = make_run([manifest_row(png_source("a.png", (16, 16)), "image")], [blob((16, 16), (8, 8), 4)])
    args = ("export", str(preds), "--format", "png,dicom-seg", "--out", str(tmp_path / "export"))
    code, _, stderr = _cli(monkeypatch, capsys, *args)
    assert code == 0 and "error:" not in stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: dicom-seg was not written for 1 of 1 sources: a DICOM SEG needs a DICOM source"]


def test_png_with_a_volume_format_on_plain_images_is_a_success(tmp_path: Path, make_run, png_source) -> None:
    preds, manifest = make_run([manifest_row(png_source("a.png", (16, 16)), "image")], [blob((16, 16), (8, 8), 4)])
    out = export_predictions(
        preds, manifest, tmp_path / "export", formats=("png", "nifti"), threshold=fixed_threshold(0.5)
    )
    line, incomplete = export_summary(out)
    assert not incomplete
    assert line.startswith("1 of 1 sources written (png 1; nifti 0, not applicable to 1")


def test_an_empty_binary_seg_is_named_in_the_summary_and_export_json(
    tmp_path: Path, dicom_sources, make_run, png_source
) -> None:
    rows = [manifest_row(dicom_sources["ct"], "dicom", frame=0), manifest_row(png_source("b.png", (16, 16)), "image")]
    quiet = np.full((128, 128), 0.4999998, np.float32)  # below 0.5 everywhere: the mask is empty
    preds, manifest = make_run(rows, [quiet, blob((16, 16), (8, 8), 4)])
    out = export_predictions(
        preds, manifest, tmp_path / "export", formats=("png", "dicom-seg"), threshold=fixed_threshold(0.5)
    )
    report = json.loads((out / "export.json").read_text())
    empty_case = report["cases"][0]["case_id"]
    assert report["empty_masks"] == [empty_case]
    assert any(n.startswith("empty mask") for n in report["cases"][0]["notes"])
    assert not any(n.startswith("empty mask") for n in report["cases"][1]["notes"])
    assert (out / f"{empty_case}_seg.dcm").is_file()
    line, incomplete = export_summary(out)
    assert f"empty mask (no pixel at or above the threshold) in 1 case(s): {empty_case}" in line and not incomplete


@pytest.mark.parametrize("random_weights", [True, False], ids=["random", "pretrained"])
def test_dicom_objects_of_a_random_weights_model_say_so(
    tmp_path: Path, dicom_sources, make_run, random_weights
) -> None:
    meta = RANDOM_META if random_weights else {"model": {"name": "ad_dinov3_vitb16"}, "random_weights": False}
    preds, manifest = make_run(
        [manifest_row(dicom_sources["ct"], "dicom", frame=0)], [blob((128, 128), (40, 70), 10)], meta=meta
    )
    out = export_predictions(
        preds, manifest, tmp_path / "export", formats=("dicom-seg", "pmap"), threshold=fixed_threshold(0.5)
    )
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 3
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.SeriesDescription.startswith("RESEARCH USE ONLY")
        texts = [ds.SeriesDescription, ds.ContentDescription, ds.ManufacturerModelName]
        if "SegmentSequence" in ds:
            texts.append(ds.SegmentSequence[0].SegmentAlgorithmName)
        for text in texts:
            assert ("RANDOM WEIGHTS" in text) is random_weights, (path.name, text)
        if random_weights:
            assert "NOT A RESULT" in ds.SeriesDescription and "NOT A RESULT" in ds.ContentDescription
            kind = "SEG" if "SegmentSequence" in ds else "parametric map"
            assert len(ds.SeriesDescription) <= 64 and ds.SeriesDescription.endswith(kind)


@pytest.mark.parametrize("spec", ["f1", "youden", "fixed:0.5", "percentile:99:{score}", "f1:{score}"])
def test_every_threshold_kind_accepts_a_score_folder(
    tmp_path: Path, make_run, png_source, monkeypatch, capsys, spec
) -> None:
    """`medad export out/score --threshold f1` used to say "is not a predictions folder" (fixed:V worked)."""
    from medad.export.request import check_score_request

    rows = [
        manifest_row(png_source(f"l{i}.png", (16, 16)), "image", label=i % 2, mask_path="") for i in range(4)
    ]
    maps = [blob((16, 16), (8, 8), 4) * (0.3 + 0.2 * (i % 2)) for i in range(4)]
    make_run(rows, maps, name="score/predictions")
    score = tmp_path / "score"
    spec = spec.format(score=score)
    check_score_request(tmp_path / "other", "png", spec)  # medad score --export refuses nothing either
    code, stdout, err = _cli(monkeypatch, capsys, "export", str(score), "--threshold", spec)
    assert code == 0, err
    threshold = json.loads((score / "export" / "export.json").read_text())["threshold"]
    assert threshold["rule"] == spec.partition(":")[0]
    assert threshold["details"].get("in_sample", False) is (spec in ("f1", "youden"))
    assert ("in-sample" in stdout + (score / "export" / "index.html").read_text()) is (spec in ("f1", "youden"))


def _no_space(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _no_space_wrapped(*_: object, **__: object) -> None:
    try:
        _no_space()
    except OSError as exc:
        raise RuntimeError("the writer failed") from exc


@pytest.mark.parametrize("where", ["write_json_atomic", "write_nifti_pair"])
def test_a_full_disk_is_named_with_the_export_folder(
    tmp_path: Path, dicom_sources, make_run, monkeypatch, capsys, where
) -> None:
    """A full disk was "cannot write the export folder (OSError)", or a wrapped one a skipped source."""
    preds, _ = make_run([manifest_row(dicom_sources["ct"], "dicom", frame=0)], [blob((128, 128), (40, 70), 10)])
    failing = _no_space if where == "write_json_atomic" else _no_space_wrapped
    monkeypatch.setattr(f"medad.export.exporter.{where}", failing)
    out = tmp_path / "export"
    code, _, err = _cli(monkeypatch, capsys, "export", str(preds), "--format", "png,nifti", "--out", str(out))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"error: the disk holding {out} is full"), err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".export.")]


def test_a_refused_export_leaves_no_output_folder(tmp_path: Path, make_run, png_source, monkeypatch, capsys) -> None:
    preds, _ = make_run([manifest_row(png_source("a.png", (8, 8)), "image")], [np.zeros((8, 8), np.float32)])
    out = tmp_path / "new" / "export"
    for bad in (["--format", "tiff"], ["--threshold", "f1:" + str(tmp_path / "missing")]):
        code, _, err = _cli(monkeypatch, capsys, "export", str(preds), "--out", str(out), *bad)
        assert code == 2 and err.startswith("error: ")
        assert not out.exists() and not (tmp_path / "new").exists()


def test_a_score_just_below_the_threshold_is_not_printed_as_the_threshold(tmp_path: Path, make_run, png_source) -> None:
    """The gallery showed "0.5000 (mask px 0)" for a score of 0.49999985 at threshold 0.5."""
    from medad.export.png import overlay_caption
    from medad.export.thresholds import score_text

    assert score_text(0.49999985, 0.5) == "0.4999999" and score_text(0.5, 0.5) == "0.5000"
    assert score_text(0.51234, 0.5) == "0.5123" and score_text(0.7, 0.5, 3) == "0.700"
    near = np.full((16, 16), 0.49999985, np.float32)
    preds, manifest = make_run([manifest_row(png_source("n.png", (16, 16)), "image")], [near])
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    page = (out / "index.html").read_text()
    assert '"score_text": "0.4999999"' in page and "c.score_text" in page
    _, footer = overlay_caption("c", float(near.max()), fixed_threshold(0.5))
    assert "score 0.4999999" in footer


def test_a_failed_export_removes_the_folders_it_made(tmp_path: Path, dicom_sources, make_run) -> None:
    """A map of the wrong size (the wrong manifest) is found after the output's parent folders were made."""
    from medad.errors import ExportError

    preds, manifest = make_run([manifest_row(dicom_sources["ct"], "dicom", frame=0)], [np.zeros((8, 8), np.float32)])
    with pytest.raises(ExportError, match="re-score"):
        export_predictions(preds, manifest, tmp_path / "a" / "b" / "export", threshold=fixed_threshold(0.5))
    assert not (tmp_path / "a").exists()


def test_a_write_error_without_a_cause_on_a_nearly_full_disk_says_disk_full(
    tmp_path: Path, make_run, png_source, monkeypatch, capsys
) -> None:
    from collections import namedtuple

    preds, _ = make_run([manifest_row(png_source("a.png", (8, 8)), "image")], [np.zeros((8, 8), np.float32)])

    def encoder_error(*_: object, **__: object) -> None:
        raise OSError("encoder error -2")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("medad.export.exporter.write_json_atomic", encoder_error)
    monkeypatch.setattr("medad.export.exporter.shutil.disk_usage", lambda _: usage(1 << 30, 1 << 30, 4 << 20))
    out = tmp_path / "export"
    code, _, err = _cli(monkeypatch, capsys, "export", str(preds), "--out", str(out))
    assert code == 2 and err.startswith(f"error: the disk holding {out} is full (4096 KiB free)"), err
