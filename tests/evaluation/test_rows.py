"""The typed row schema: what evaluate writes is a MetricRow, and the reports read its columns from the schema."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medad.evaluation import MetricRow, evaluate
from medad.evaluation.rows import COMPARISON_KEYS, METRIC_ROW_FIELDS, METRIC_ROW_KEYS, PER_IMAGE_COLUMNS
from tests.evaluation.test_evaluate import _setup


def test_metrics_rows_are_metric_rows_and_the_reports_read_the_schema(tmp_path) -> None:
    import pandas as pd

    from medad.reports import loader

    manifest, masks, _ = _setup(tmp_path)

    def reader(row):
        return masks[int(row["image_path"].split("/")[-1][:-4])]

    out = tmp_path / "eval"
    evaluate({"good": tmp_path / "good", "weak": tmp_path / "weak"}, manifest, out, ci={"n_resamples": 20},
             mask_reader=reader)  # fmt: skip
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert rows and all(set(row) == set(METRIC_ROW_FIELDS) for row in rows)  # every key of the schema, no other
    typed = [MetricRow(**row) for row in rows]  # each row fits the schema as written
    assert {r.aggregate for r in typed} == {"class", "class_mean", "pooled"}
    assert list(pd.read_csv(out / "per_image.csv").columns) == list(PER_IMAGE_COLUMNS)
    comparisons = json.loads((out / "comparisons.json").read_text())
    assert comparisons and all(set(COMPARISON_KEYS) <= set(row) for row in comparisons)
    assert list(METRIC_ROW_KEYS) == loader.RESULT_COLUMNS
    assert set(METRIC_ROW_FIELDS) - set(METRIC_ROW_KEYS) == {"aggregate", "random_weights", "not_zero_shot"}


def test_rows_of_a_marked_model_say_not_zero_shot_on_that_dataset_only(tmp_path) -> None:
    """A predictions folder whose card says the protocol scored a target its training data include (the study's
    ``not_zero_shot``) marks every metrics row of that model on that dataset, and the settings map it."""
    manifest, masks, _ = _setup(tmp_path)
    assert not (tmp_path / "good" / "meta.json").exists()  # _setup writes none: this card is the whole meta
    card = {"name": "adaclip_tiny", "study": {"not_zero_shot": {"synth": "trained on CVC-ColonDB"}}}
    (tmp_path / "good" / "meta.json").write_text(json.dumps({"model": card}))

    def reader(row):
        return masks[int(row["image_path"].split("/")[-1][:-4])]

    out = tmp_path / "eval"
    evaluate({"good": tmp_path / "good", "weak": tmp_path / "weak"}, manifest, out, ci={"n_resamples": 0},
             mask_reader=reader)  # fmt: skip
    doc = json.loads((out / "metrics.json").read_text())
    marks = {(r["model"], r["not_zero_shot"]) for r in doc["rows"]}
    assert marks == {("good", "not zero-shot (trained on CVC-ColonDB)"), ("weak", None)}
    assert doc["settings"]["not_zero_shot"] == {"good": {"synth": "not zero-shot (trained on CVC-ColonDB)"}}
    comparisons = json.loads((out / "comparisons.json").read_text())
    assert comparisons and {c["not_zero_shot"] for c in comparisons} == {"good: not zero-shot (trained on CVC-ColonDB)"}
    measured = {r["model"]: r for r in doc["paper_view"]["measured"]}
    assert measured["good"]["zero_shot"] == "not zero-shot (trained on CVC-ColonDB)"

    from medad.reports import build_report

    report = build_report(out, tmp_path / "report")
    text = (report.parent / "report.md").read_text()
    assert "good on synth — not zero-shot (trained on CVC-ColonDB)" in text
    assert "weak on synth — not zero-shot" not in text and "weak on synth" in text
    assert "good vs weak (good: not zero-shot (trained on CVC-ColonDB))" in text  # the paired comparisons say it


def test_metric_row_is_frozen() -> None:
    row = MetricRow("m", "d", "c", "dice", 0.5, 0.4, 0.6, 3, "class", "ok", None)
    assert row.to_dict()["random_weights"] is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.value = 1.0  # type: ignore[misc]
