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
