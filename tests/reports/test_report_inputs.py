"""`medad report` finds what an evaluation was made from: the predictions folders it recorded and the private
manifests beside them; `--manifest FILE` (unkeyed) and the shareable `predictions/manifest.csv` both work."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from medad.cli import main
from medad.engine.predictions import save_manifests
from medad.evaluation import evaluate
from tests.reports.conftest import MODELS, PATIENT, build_study


def _report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["medad", "report", *args])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


@pytest.fixture
def evaluated(tmp_path: Path):
    """A study scored as `medad score` leaves it (shareable manifest inside, private one beside) and evaluated
    into a folder of its own, as README's flow does (`medad eval out/score/predictions ... --out out/eval`)."""
    study = build_study(tmp_path / "study")
    for folder in study.predictions.values():
        save_manifests(folder, study.manifest)
    evaluate(study.predictions, study.manifest, tmp_path / "eval", ci={"n_resamples": 0})
    return study, tmp_path / "eval"


def _case_figures(out: Path) -> set[str]:
    return {p.name for p in (out / "figures").glob("cases_*.png")}


def test_report_of_an_eval_folder_finds_its_predictions_and_private_manifest(evaluated, monkeypatch, capsys) -> None:
    study, eval_dir = evaluated
    code, text = _report(monkeypatch, capsys, str(eval_dir), "--cases", "1")
    assert code == 0, text
    assert {f"cases_{m}_isic_best.png" for m in MODELS} <= _case_figures(eval_dir / "report")
    html = (eval_dir / "report" / "report.html").read_text()
    assert "Heatmaps not shown" not in html and PATIENT not in html and str(study.root) not in html


def test_moved_outputs_keep_their_recorded_predictions(evaluated, tmp_path, monkeypatch, capsys) -> None:
    study, eval_dir = evaluated
    moved = tmp_path / "moved"
    (moved / "study").mkdir(parents=True)
    shutil.move(study.root / "run", moved / "study" / "run")  # the output tree moves as a whole
    shutil.move(eval_dir, moved / "eval")
    code, text = _report(monkeypatch, capsys, str(moved / "eval"), "--cases", "1")
    assert code == 0, text
    assert f"cases_{MODELS[0]}_isic_best.png" in _case_figures(moved / "eval" / "report")


@pytest.mark.parametrize("which", ["private", "shareable"])
def test_an_unkeyed_manifest_file_is_accepted(evaluated, monkeypatch, capsys, which) -> None:
    """`--manifest FILE` ended in a TypeError; the shareable copy said "image . does not exist"."""
    study, eval_dir = evaluated
    folder = study.predictions[MODELS[0]]
    private = folder.parent / "private" / f"{folder.name}.manifest.csv"
    manifest = private if which == "private" else folder / "manifest.csv"
    out = eval_dir.parent / f"report-{which}"
    args = [str(eval_dir), "--out", str(out), "--cases", "1", "--predictions", str(folder), "--manifest", str(manifest)]
    code, text = _report(monkeypatch, capsys, *args)
    assert code == 0, text
    assert f"cases_{MODELS[0]}_isic_best.png" in _case_figures(out)


def test_a_shareable_manifest_without_its_private_copy_is_refused_with_the_fix(evaluated, monkeypatch, capsys) -> None:
    study, eval_dir = evaluated
    folder = study.predictions[MODELS[0]]
    shutil.rmtree(folder.parent / "private")
    out = eval_dir.parent / "report-refused"
    args = [str(eval_dir), "--out", str(out), "--manifest", str(folder / "manifest.csv")]
    code, text = _report(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in text
    assert text.startswith("error: ") and "shareable copy" in text and "private/predictions.manifest.csv" in text
    assert not out.exists()  # refused before any work: no report folder left behind


def test_evaluating_random_weights_says_so_on_the_terminal(tmp_path: Path, capsys) -> None:
    """`medad eval` of a random-weights model printed only "evaluated 1 model(s) ..."."""
    from medad.errors import show_data_warnings

    study = build_study(tmp_path / "study", random_weights=True)
    with show_data_warnings():  # what medad's CLI wraps every command in
        evaluate(study.predictions, study.manifest, tmp_path / "eval", ci={"n_resamples": 0})
    err = capsys.readouterr().err
    assert err.count("warning: RANDOM WEIGHTS") == 1 and MODELS[1] in err
    evaluate({MODELS[0]: study.predictions[MODELS[0]]}, study.manifest, tmp_path / "eval0", ci={"n_resamples": 0})
    assert "RANDOM WEIGHTS" not in capsys.readouterr().err
