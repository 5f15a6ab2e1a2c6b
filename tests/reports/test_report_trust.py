"""What a report states is what was done: resamples beside each test, the unit used, readable names, the
random-weights banner from metrics.json alone."""

from __future__ import annotations

import json

import pytest

from medad.evaluation import evaluate
from medad.reports import build_report
from tests.evaluation.test_evaluate import _setup

STAMP = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("trust")
    manifest, masks, _ = _setup(tmp)
    (tmp / "weak" / "meta.json").write_text(json.dumps({"random_weights": True}))
    ev = tmp / "evaluation"
    evaluate(
        {"good": tmp / "good", "weak": tmp / "weak"},
        manifest,
        ev,
        ci={"n_resamples": 200, "method": "percentile"},
        mask_reader=lambda row: masks[int(row["image_path"].split("/")[-1][:-4])],
    )
    html = build_report(ev, tmp / "report", generated_at=STAMP)
    return html.read_text(), (tmp / "report" / "report.md").read_text()


def test_resamples_are_printed_beside_each_test(report) -> None:
    html, md = report
    assert "paired bootstrap, 200 resamples" in html and "paired bootstrap, 200 resamples" in md
    assert "DeLong (analytic)" in html and "Wilcoxon signed-rank (CI: bootstrap, 200 resamples)" in html


def test_settings_say_what_was_used(report) -> None:
    html, _ = report
    settings = html.split("<caption>Evaluation settings</caption>", 1)[1].split("</table>", 1)[0]
    assert "<td>resampling unit</td><td>image</td>" in settings
    assert "group_id clusters" not in settings
    assert "<td>CI method</td><td>percentile</td>" in settings


def test_readable_names_and_aggregates(report) -> None:
    html, _ = report
    results = html.split("<h2>Results</h2>", 1)[1].split("<h2>Comparisons</h2>", 1)[0]
    for label in ("Pixel AUROC", "Image AUROC", "AUPRO", "Dice", "IoU"):
        assert f"<th>{label}</th>" in results
    assert "<th>pixel_auroc</th>" not in results
    assert "class mean (macro: mean over classes)" in results and "pooled (micro: all images together)" in results
    cases = html.split("<h2>Best and worst cases</h2>", 1)[1]
    assert "<th>image score</th>" in cases and "<th>Dice</th>" in cases and "<th>image_score</th>" not in cases


def test_banner_from_metrics_json_alone(report) -> None:
    html, md = report
    banner = html.split('<div class="banner" role="alert">', 1)[1].split("</div>", 1)[0]
    assert banner.startswith("WARNING - RANDOM WEIGHTS: weak ran") and "good" not in banner
    assert "**WARNING - RANDOM WEIGHTS: weak ran" in md
