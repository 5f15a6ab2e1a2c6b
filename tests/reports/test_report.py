"""Report content, privacy, self-containedness, determinism and error handling."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medad.cli import main
from medad.errors import DataError
from medad.reports import build_report, format_result, load_evaluation
from medad.reports.cases import select_cases
from tests.reports.conftest import MODELS, PATIENT, build_study

STAMP = "2026-01-01T00:00:00+00:00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    study = build_study(tmp_path_factory.mktemp("built") / "study")
    html = build_report(
        study.eval_dir,
        predictions=study.predictions,
        manifest={"isic": study.manifest},
        title="Synthetic study",
        n_cases=2,
        generated_at=STAMP,
    )
    return study, html


def test_report_files_and_results(built) -> None:
    study, html_path = built
    out = html_path.parent
    assert out == study.eval_dir.parent / "report"
    tables = ("results.csv", "results.json", "comparisons.csv", "comparisons.json", "settings.json", "cases.csv")
    for name in ("report.html", "report.md", *(f"tables/{t}" for t in tables)):
        assert (out / name).is_file(), name
    html = html_path.read_text()
    md = (out / "report.md").read_text()
    assert "0.800 [0.750, 0.840]" in html
    for row in study.rows:
        shown = format_result(row)
        if row["status"] == "ok":
            assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", shown)
        assert shown in html and shown in md, shown
    assert "n/a (no abnormal images with masks)" in html
    assert "mean over classes" in html and "pooled" in html
    results = pd.read_csv(out / "tables" / "results.csv")
    assert len(results) == len(study.rows)
    assert set(results.loc[results["status"] == "not_applicable", "reason"]) == {"no abnormal images with masks"}
    comparisons = json.loads((out / "tables" / "comparisons.json").read_text())
    assert comparisons[0]["p_adjusted"] == pytest.approx(0.0246)
    assert "0.0246 (holm)" in html and "0.100 [0.020, 0.180]" in html
    for setting in ("percentile", "2000", "group_id", "1234", "95%"):
        assert setting in html
    assert "Generated at 2026-01-01T00:00:00+00:00" in html and STAMP in md


def test_html_is_standalone_and_figures_are_pngs(built) -> None:
    _, html_path = built
    out = html_path.parent
    html = html_path.read_text()
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    figures = sorted((out / "figures").glob("*.png"))
    assert len(embedded) == len(figures) >= 6
    names = {p.name for p in figures}
    assert {"curves_isic_nevus.png", "curves_isic___pooled__.png", "hist_isic.png"} <= names
    assert {f"cases_{m}_isic_{g}.png" for m in MODELS for g in ("best", "missed", "false_alarms")} <= names
    for path in figures:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    assert all(re.search(rf"figures/{re.escape(n)}", (out / "report.md").read_text()) for n in names)


def test_no_paths_or_patient_names_in_outputs(built) -> None:
    study, html_path = built
    masks = [p for p in study.manifest["mask_path"] if p]
    secrets = [PATIENT, str(study.root), *study.manifest["image_path"], *masks]
    for path in _outputs(html_path.parent):
        assert PATIENT not in path.name
        text = path.read_bytes().decode("latin-1")
        for secret in secrets:
            assert secret not in text, (path.name, secret)
    assert study.manifest["case_id"].iloc[4] in html_path.read_text()


def test_best_and_worst_cases_are_ordered_by_pixel_quality(built) -> None:
    # Abnormal images are ranked by per-image Dice (pixel quality), no longer by image score (issue 13.3): the
    # image with the highest image score (0.9) has the lowest Dice here, so it is a "missed" case.
    study, html_path = built
    cases = pd.read_csv(html_path.parent / "tables" / "cases.csv")
    part = cases[cases["model"] == MODELS[0]]
    best = part[part["group"] == "best"]
    missed = part[part["group"] == "missed"]
    alarms = part[part["group"] == "false_alarms"]
    assert best["dice"].tolist() == pytest.approx([0.85, 0.8]) and best["image_score"].tolist() == [0.7, 0.8]
    assert missed["dice"].tolist() == pytest.approx([0.7, 0.75]) and missed["image_score"].tolist() == [0.9, 0.4]
    assert alarms["image_score"].tolist() == [0.55, 0.35]
    assert set(best["label"]) == set(missed["label"]) == {1} and set(alarms["label"]) == {0}
    picked = select_cases(study.per_image, MODELS[1], "isic", 10)
    assert picked["best"]["dice"].is_monotonic_decreasing
    assert picked["missed"]["dice"].is_monotonic_increasing
    assert not set(picked["best"]["index"]) & set(picked["missed"]["index"])
    no_dice = select_cases(study.per_image.assign(dice=float("nan")), MODELS[0], "isic", 2)
    assert no_dice["best"]["image_score"].tolist() == [0.9, 0.8]  # no Dice anywhere: image score decides


@pytest.mark.parametrize("flagged", [False, True])
def test_random_weights_banner_only_when_flagged(make_study, flagged: bool) -> None:
    study = make_study(random_weights=flagged)
    if flagged:  # a run folder: predictions folders and their meta.json are discovered
        html_path = build_report(study.eval_dir.parent, generated_at=STAMP)
        assert html_path == study.eval_dir.parent / "report" / "report.html"
    else:
        html_path = build_report(study.eval_dir, predictions=list(study.predictions.values()), generated_at=STAMP)
    html = html_path.read_text()
    md = (html_path.parent / "report.md").read_text()
    assert ("RANDOM WEIGHTS" in html) is flagged
    assert ("RANDOM WEIGHTS" in md) is flagged
    assert ('class="banner"' in html) is flagged
    if flagged:
        banner = re.search(r'<div class="banner"[^>]*>(.*?)</div>', html).group(1)
        assert banner.startswith(f"WARNING - RANDOM WEIGHTS: {MODELS[1]} ran") and MODELS[0] not in banner
    assert "Heatmaps not shown: no manifest with image paths was given or found" in html


def test_output_is_deterministic(built, tmp_path: Path) -> None:
    study, html_path = built
    first = html_path.parent
    other = "2030-05-05T05:05:05+00:00"
    kwargs = {"predictions": study.predictions, "manifest": {"isic": study.manifest}, "n_cases": 2}
    second = build_report(study.eval_dir, tmp_path / "b", title="Synthetic study", generated_at=other, **kwargs).parent
    files = [p.relative_to(first) for p in _outputs(first)]
    assert files == [p.relative_to(second) for p in _outputs(second)]
    differing = {str(f) for f in files if (first / f).read_bytes() != (second / f).read_bytes()}
    assert differing == {"report.html", "report.md"}
    for name in differing:
        assert (first / name).read_text().replace(STAMP, other) == (second / name).read_text()


def test_manifest_that_was_not_evaluated_is_rejected(make_study) -> None:
    study = make_study()
    wrong = study.manifest.iloc[::-1].reset_index(drop=True)
    with pytest.raises(DataError, match="pass the evaluated manifest"):
        build_report(study.eval_dir, predictions=study.predictions, manifest=wrong, generated_at=STAMP)


def test_missing_files_and_not_applicable_curves(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no metrics\.json") as info:
        load_evaluation(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "metrics.json").write_text('{"settings": {}}')
    with pytest.raises(DataError, match="no 'rows' list"):
        load_evaluation(tmp_path)


def test_cli_report(make_study, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    study = make_study()
    manifest_csv = study.root / "manifest.csv"
    study.manifest.to_csv(manifest_csv, index=False)
    out = study.root / "cli-report"
    argv = ["medad", "report", str(study.eval_dir.parent), "--out", str(out), "--cases", "1"]
    argv += ["--predictions", f"{MODELS[0]}={study.predictions[MODELS[0]]}", "--manifest", f"isic={manifest_csv}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "figures" / f"cases_{MODELS[0]}_isic_best.png").is_file()
    assert not (out / "figures" / f"cases_{MODELS[1]}_isic_best.png").exists()

    monkeypatch.setattr(sys, "argv", ["medad", "report", str(study.root / "data")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.json" in err and "Traceback" not in err


def test_report_from_real_evaluation(tmp_path: Path) -> None:
    from medad.evaluation import evaluate

    study = build_study(tmp_path / "study")
    manifest = study.manifest.copy()
    manifest.loc[7, "class_name"] = "melanoma"
    run = tmp_path / "real-run"
    result = evaluate(study.predictions, manifest, run / "evaluation", ci={"n_resamples": 50, "seed": 1})
    html_path = build_report(run, predictions=study.predictions, manifest=manifest, n_cases=1, generated_at=STAMP)
    html = html_path.read_text()
    assert result["rows"] and any(r["status"] == "not_applicable" for r in result["rows"])
    for row in result["rows"]:
        assert format_result(row) in html, row
    for comparison in result["comparisons"]:
        assert f"{comparison['model_a']} vs {comparison['model_b']}" in html
    assert "bootstrap resamples" in html and ">50<" in html
    figures = {p.name for p in (run / "report" / "figures").glob("*.png")}
    expected = {"curves_isic_melanoma.png", "curves_isic___pooled__.png", f"cases_{MODELS[0]}_isic_best.png"}
    assert expected <= figures
    assert not re.search(r"https?://", html) and PATIENT not in html
    cases = pd.read_csv(run / "report" / "tables" / "cases.csv")
    best = cases[(cases["model"] == MODELS[0]) & (cases["group"] == "best")]
    assert best["image_score"].tolist() == pytest.approx([0.9])


def test_run_folder_resolves_to_its_evaluation_subfolder(tmp_path):
    from medad.reports import resolve_evaluation_dir

    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "metrics.json").write_text("{}")
    (tmp_path / "metrics.json").write_text("{}")
    assert resolve_evaluation_dir(tmp_path) == tmp_path / "evaluation"
    assert resolve_evaluation_dir(tmp_path / "evaluation") == tmp_path / "evaluation"
