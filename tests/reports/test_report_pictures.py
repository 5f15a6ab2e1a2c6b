"""The report's case figures render like the export overlays (opaque heatmap whose colours are the colour bar's),
and "best" never lists a case whose Dice is 0."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image

from medad.reports import plots
from medad.reports.cases import select_cases
from medad.utils.colors import HEATMAP_CMAP


def _near(pixels: np.ndarray, colour: np.ndarray, tolerance: int = 3) -> int:
    return int((np.abs(pixels.astype(int) - colour.astype(int)).max(axis=-1) <= tolerance).sum())


def test_case_heatmaps_are_opaque_so_their_colours_are_the_colour_bars() -> None:
    heat = np.full((64, 64), 0.2, np.float32)
    heat[:, 32:] = 0.8
    image = np.full((64, 64, 3), 0.5, np.float32)
    png = plots.cases_figure("t", [plots.CaseView("c1", image, heat, None)], threshold=0.5)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    cmap = matplotlib.colormaps[HEATMAP_CMAP]
    low, high = (np.round(np.array(cmap(v)[:3]) * 255) for v in (0.2, 0.8))
    # blended over a grey image (alpha 0.55) neither colour appeared outside the colour bar
    assert _near(pixels, low) > 2000 and _near(pixels, high) > 2000


def test_best_never_lists_a_dice_of_zero() -> None:
    per_image = pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "index": range(5),
            "label": [1, 1, 1, 1, 0],
            "image_score": [0.9, 0.8, 0.7, 0.6, 0.5],
            "dice": [0.0, 0.0, 0.4, 0.0, np.nan],
        }
    )
    groups = select_cases(per_image, "m", "d", 4)
    assert groups["best"]["index"].tolist() == [2]
    assert groups["missed"]["index"].tolist() == [3, 1, 0]


def test_a_comparisons_n_says_what_it_counts() -> None:
    """The Dice row said "n 12" where only 5 pairs differed (the others do not enter the Wilcoxon test)."""
    from medad.reports.tables import comparison_n_label

    assert comparison_n_label("wilcoxon", 12, 5) == "12 pairs, 5 differ"
    assert comparison_n_label("delong", 30, None) == "30 images"
    assert comparison_n_label("paired_bootstrap", 30, float("nan")) == "30 images"


def test_the_wilcoxon_comparison_records_how_many_pairs_differ(tmp_path) -> None:
    from medad.evaluation import evaluate
    from medad.reports import build_report
    from tests.reports.conftest import build_study

    study = build_study(tmp_path / "study")
    result = evaluate(study.predictions, study.manifest, tmp_path / "run" / "evaluation", ci={"n_resamples": 0})
    dice = next(c for c in result["comparisons"] if c["metric"] == "dice" and c["class_name"] == "__pooled__")
    assert dice["test"] == "wilcoxon" and 0 <= dice["n_differ"] <= dice["n"]
    html = build_report(tmp_path / "run", n_cases=1, generated_at="t").read_text()
    assert f"<td>{dice['n']} pairs, {dice['n_differ']} differ</td>" in html
    assert "only the pairs that differ enter its signed-rank test" in html


def test_case_figures_of_a_random_weights_model_say_so(monkeypatch) -> None:
    figures: list = []
    monkeypatch.setattr(plots, "figure_png", lambda fig: figures.append(fig) or b"")
    case = plots.CaseView("c1", np.zeros((8, 8, 3)), np.zeros((8, 8), np.float32), None)
    plots.cases_figure("t", [case], threshold=0.5, random_weights=True)
    plots.cases_figure("t", [case], threshold=0.5)
    assert "RANDOM WEIGHTS - NOT A RESULT" in figures[0].get_suptitle()
    assert "RANDOM WEIGHTS" not in figures[1].get_suptitle()
