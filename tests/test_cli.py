"""What a new user meets first: --version, readable --help, model names in eval, datasets check on a plain folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medad
from tests.cli import run_medad


def _medad(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setenv("COLUMNS", "160")  # help tables wide enough to read whole
    return run_medad(monkeypatch, capsys, *args)


def test_version(monkeypatch, capsys) -> None:
    code, out = _medad(monkeypatch, capsys, "--version")
    assert code == 0
    assert out.strip() == f"medad {medad.__version__}"


@pytest.mark.parametrize("command", ["score", "eval", "train", "export", "report", "run", "datasets check"])
def test_help_shows_readable_placeholders(monkeypatch, capsys, command: str) -> None:
    code, out = _medad(monkeypatch, capsys, *command.split(), "--help")
    assert code == 0
    assert "<" not in out.replace("<root", ""), out  # no <list[Path]>, <int>, <bool> annotations
    if command == "score":
        assert "PATHS" in out and "--out" in out and "PATH" in out and " N " in out


def test_score_and_export_threshold_help_list_every_form(monkeypatch, capsys) -> None:
    for command in ("score", "export"):
        _, out = _medad(monkeypatch, capsys, command, "--help")
        flat = " ".join(out.replace("│", " ").split())
        for form in ("fixed:V", "percentile:P:NORMALS_PRED_DIR", "f1[:VAL_PRED_DIR]", "youden[:VAL_PRED_DIR]"):
            assert form in flat, (command, form)


def test_datasets_check_reads_a_plain_folder_of_images(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "my photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    code, out = _medad(monkeypatch, capsys, "datasets", "check", str(folder), "--json")
    report = json.loads(out)
    assert code == 0, out
    assert (report["kind"], report["total"], report["unknown"]) == ("files", 3, 3)


def test_eval_names_a_model_from_its_predictions_metadata(tmp_path: Path, monkeypatch, capsys) -> None:
    from medad.data import write_layout

    root = write_layout(tmp_path / "isic", "isic2016", n_abnormal=3, size=48)
    out = tmp_path / "scored"
    code, log = _medad(
        monkeypatch, capsys, "score", str(root), "--kind", "isic", "--model", "ad_dinov3_tiny", "--out", str(out)
    )
    assert code == 0, log
    code, log = _medad(
        monkeypatch, capsys, "eval", str(out / "predictions"), "--data", str(root), "--kind", "isic",
        "--ci-resamples", "0", "--out", str(tmp_path / "ev"),
    )  # fmt: skip
    assert code == 0, log
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {row["model"] for row in metrics["rows"]} == {"ad_dinov3_tiny"}  # not the parent folder "scored"


def test_a_stray_file_in_a_scored_folder_is_a_warning_but_a_named_one_is_an_error(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = tmp_path / "ward"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / "a.png")
    (folder / "notes.txt").write_text("to do")
    code, log = _medad(
        monkeypatch, capsys, "score", str(folder), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "o")
    )
    assert code == 0, log
    assert any(line.startswith("warning:") and "notes.txt" in line for line in log.splitlines())
    assert len((tmp_path / "o" / "scores.csv").read_text().splitlines()) == 2  # header + the one image
    code, log = _medad(monkeypatch, capsys, "datasets", "check", str(folder))
    assert code == 2 and "notes.txt" in log  # the check lists it
    code, log = _medad(
        monkeypatch,
        capsys,
        "score",
        str(folder / "notes.txt"),
        "--model",
        "ad_dinov3_tiny",
        "--out",
        str(tmp_path / "p"),
    )
    assert code == 2 and "notes.txt" in log and "error:" in log
