"""Bad inputs give one clear DataError naming the file, and exit 2 through the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from medad.cli import app, main
from medad.data import check_dataset, load_manifest, read_image, read_mask, write_layout
from medad.data.dicom import make_dicom
from medad.errors import DataError

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, DataError):
        return 2, str(result.exception)
    return result.exit_code, result.output


def test_missing_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope does not exist"):
        load_manifest(tmp_path / "nope", "mvtec")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty.*no images found"):
        load_manifest(tmp_path / "empty", "folder")
    with pytest.raises(DataError, match=r"is not a known dataset layout \(tried: .*VisA.*ISIC.*MVTec"):
        load_manifest(tmp_path / "empty" / "images", "auto")


def test_truncated_image(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=64)
    bad = root / "bottle" / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:200])
    row = load_manifest(root, "mvtec").set_index("image_path").loc[str(bad.resolve())]
    with pytest.raises(DataError, match=r"000\.png cannot be decoded"):
        read_image({"image_path": str(bad), "source_format": "image"})
    report = check_dataset(root, "mvtec")
    assert [p["path"] for p in report["problems"]] == [str(bad.resolve())]
    assert row["label"] == 0


def test_mask_of_another_size(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    mask = root / "grid" / "ground_truth" / "defect" / "001_mask.png"
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(mask)
    manifest = load_manifest(root, "mvtec")
    row = manifest[manifest["mask_path"] == str(mask.resolve())].iloc[0]
    with pytest.raises(DataError, match=r"001_mask\.png is 24x20 but its image .*001\.png is 32x32"):
        read_mask(row)
    code, out = _cli("datasets", "check", str(root), "--kind", "mvtec", "--json")
    assert code == 2
    report = json.loads(out)
    assert {"kind", "variant", "total", "normal", "abnormal", "classes", "problems"} <= set(report)
    assert report["problems"][0]["path"] == str(mask.resolve())


def test_mask_without_image_and_image_without_mask(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    (root / "bottle" / "test" / "defect" / "000.png").unlink()
    (root / "grid" / "ground_truth" / "defect" / "002_mask.png").unlink()
    with pytest.raises(DataError, match=r"2 problem\(s\)") as info:
        load_manifest(root, "mvtec")
    message = str(info.value)
    assert "bottle/ground_truth/defect/000_mask.png: is a mask without an image" in message
    assert "grid/test/defect/002.png: has no mask" in message
    code, _ = _cli("datasets", "check", str(root), "--kind", "mvtec")
    assert code == 2


def test_non_image_file(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    (root / "bottle" / "test" / "good" / "notes.txt").write_text("hello")
    (root / "bottle" / "test" / "good" / ".DS_Store").write_text("ignored")
    with pytest.raises(DataError, match=r"notes\.txt: is not an image file"):
        load_manifest(root, "mvtec")
    fake = root / "grid" / "test" / "good" / "000.png"
    fake.write_text("not a png")
    report = check_dataset(root, "mvtec")
    assert {Path(p["path"]).name for p in report["problems"]} == {"notes.txt", "000.png"}


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    shutil.copy(get_testdata_file("rtplan.dcm"), tmp_path / "plan.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    with pytest.raises(DataError, match=r"plan\.dcm: is a DICOM file without pixel data"):
        make_dicom(tmp_path)
    assert len(make_dicom(tmp_path, strict=False)) == 1
    code, output = _cli("datasets", "check", str(tmp_path), "--kind", "dicom")
    assert code == 2 and "plan.dcm: is a DICOM file without pixel data" in output


def test_cli_exit_codes_through_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_layout(tmp_path / "isic", "isic2016", size=32)

    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["medad", *args])
        with pytest.raises(SystemExit) as info:
            main()
        return int(info.value.code or 0)

    assert run("datasets", "check", str(root)) == 0
    assert "variant isic2016" in capsys.readouterr().out
    assert run("datasets", "check", str(tmp_path / "none")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none does not exist" in err and "Traceback" not in err


def test_an_empty_input_folder_is_named_not_the_filesystem_root(tmp_path: Path) -> None:
    from medad.data import manifest_from_paths

    (tmp_path / "scans").mkdir()
    with pytest.raises(DataError) as err:
        manifest_from_paths([str(tmp_path / "scans")])
    assert f"{tmp_path / 'scans'}: no images found" in str(err.value)
    assert ": /:" not in str(err.value)
