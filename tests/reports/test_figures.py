"""Report figures show what is there: n/a instead of flat panels, values in legends, shared histogram ranges,
the export colours for predicted and ground-truth contours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from medad.reports import plots
from medad.reports.loader import Curve
from medad.utils.colors import GT_CONTOUR, PRED_CONTOUR


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    figures: list = []

    def keep(fig):
        figures.append(fig)
        return b""

    monkeypatch.setattr(plots, "figure_png", keep)
    return figures


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_undefined_metric_is_na_not_a_flat_curve(captured) -> None:
    flat = Curve(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.5, 1.0, 1.0]))
    good = Curve(np.array([0.0, 0.2, 1.0]), np.array([0.0, 0.9, 1.0]))
    curves = {"m": {"image/roc": flat, "pixel/roc": good}}
    areas = {"m": {"image/roc": "no normal images", "pixel/roc": 0.8123}}
    plots.curves_figure("t", curves, 0.3, areas)
    image_ax, pixel_ax = (ax for ax in captured[0].axes if ax.get_title())
    assert image_ax.get_title() == "image-level ROC" and not image_ax.lines
    assert _texts(image_ax) == ["n/a: no normal images"]
    legend = [t.get_text() for t in pixel_ax.get_legend().get_texts()]
    assert "m (AUROC 0.812)" in legend


def test_pro_panel_marks_the_fpr_limit(captured) -> None:
    pro = Curve(np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    plots.curves_figure("t", {"m": {"pixel/pro": pro}}, 0.3, {"m": {"pixel/pro": 0.5}})
    (ax,) = (a for a in captured[0].axes if a.get_title())
    assert ax.get_xlim()[1] == pytest.approx(0.45)
    assert {"m (AUPRO 0.500)", "FPR limit 0.3"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    assert ax.get_xlabel() == "false positive rate" and ax.get_ylabel() == "per-region overlap"


def test_histograms_side_by_side_share_the_x_range(captured) -> None:
    per_image = pd.DataFrame(
        {
            "model": ["a"] * 4 + ["b"] * 4,
            "label": pd.array([0, 1, 0, 1, 0, 1, 0, 1], dtype="Int64"),
            "image_score": [0.1, 0.2, 0.15, 0.25, 0.5, 0.9, 0.6, 0.95],
        }
    )
    plots.histogram_figure("d", per_image)
    a, b = captured[0].axes
    assert a.get_xlim() == b.get_xlim() == pytest.approx((0.1, 0.95))


def test_case_contours_use_the_export_colours(captured) -> None:
    heat = np.zeros((20, 20), np.float32)
    heat[5:12, 5:12] = 0.9
    mask = np.zeros((20, 20), bool)
    mask[8:15, 8:15] = True
    plots.cases_figure("t", [plots.CaseView("c1", np.zeros((20, 20, 3)), heat, mask)], threshold=0.5)
    overlay = captured[0].axes[1]
    colours = {
        to_hex(c.get_edgecolor()[0])
        for c in overlay.collections
        if hasattr(c, "get_edgecolor") and len(c.get_edgecolor())
    }
    assert {PRED_CONTOUR, GT_CONTOUR} <= colours
    assert PRED_CONTOUR == "#00ffff" and GT_CONTOUR == "#ff00ff"
    assert "contours: predicted mask (cyan), ground truth (magenta)" in captured[0].get_suptitle()
