"""The report's reproduction sections (medad/reports/paper.py): the class words each model was prompted with."""

from __future__ import annotations

import json
from pathlib import Path

from medad.reports import build_report
from tests.reports.conftest import MODELS, build_study

STAMP = "2026-01-01T00:00:00+00:00"


def test_class_words_used_are_shown_per_model_and_class(tmp_path: Path) -> None:
    study = build_study(tmp_path / "study")
    for model, word in zip(MODELS, ("skin lesion", "01"), strict=True):
        meta_path = study.predictions[model] / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta.update(compat="clean" if word != "01" else "reference", class_words={"isic": {"skin_lesion": word}})
        meta_path.write_text(json.dumps(meta))
    html_path = build_report(study.eval_dir, predictions=study.predictions, generated_at=STAMP)
    html = html_path.read_text()
    assert "Text class words" in html
    assert "<td>skin lesion</td><td>clean</td>" in html and "<td>01</td><td>reference</td>" in html
    markdown = (html_path.parent / "report.md").read_text()
    assert markdown.index("Text class words") < markdown.index("## Results")


def test_no_class_words_section_without_recorded_words(tmp_path: Path) -> None:
    study = build_study(tmp_path / "study")
    html = build_report(study.eval_dir, predictions=study.predictions, generated_at=STAMP).read_text()
    assert "Text class words" not in html


def test_paper_view_beside_the_published_figures(tmp_path: Path) -> None:
    from medad.evaluation import evaluate

    study = build_study(tmp_path / "study")
    run = tmp_path / "run"
    evaluate(study.predictions, study.manifest, run / "evaluation", ci={"n_resamples": 0})
    html = build_report(run, predictions=study.predictions, n_cases=1, generated_at=STAMP).read_text()
    assert "Paper view" in html and "published, not re-measured" in html
    assert "AnomalyCLIP paper Tab. 1 / Tab. 2" in html and "89.7 / 78.4" in html
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    mean = next(
        r for r in metrics["rows"]
        if r["model"] == MODELS[0] and r["class_name"] == "__mean__" and r["metric"] == "pixel_auroc"
    )  # fmt: skip
    assert f"<td>ISIC</td><td>{100 * mean['value']:.1f}</td>" in html
    # eight images called "isic" are not the public ISIC test set: the table itself says so
    assert "NOT COMPARABLE with the published figures below" in html
    assert "<td>NOT COMPARABLE: 8 images, not the public test set (379)</td>" in html
    assert "evaluated at native resolution" in html
