"""Threshold rules against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from medad.errors import ExportError
from medad.export import fixed_threshold, optimal_threshold, percentile_threshold, resolve_threshold
from tests.export.conftest import manifest_row


def _brute(scores: np.ndarray, labels: np.ndarray, criterion: str) -> float:
    best, value = -1.0, None
    for t in np.unique(scores)[::-1]:
        pred = scores >= t
        tp, fp = np.sum(pred & labels), np.sum(pred & ~labels)
        fn, tn = np.sum(~pred & labels), np.sum(~pred & ~labels)
        v = 2 * tp / (2 * tp + fp + fn) if criterion == "f1" else tp / (tp + fn) - fp / (fp + tn)
        if v > best + 1e-12:
            best, value = v, t
    return float(value)


@pytest.mark.parametrize("criterion", ["f1", "youden"])
def test_optimal_thresholds_match_brute_force(criterion: str) -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(labels * 1.0, 1.0), 2)
    got = optimal_threshold(scores, labels.astype(int), criterion)
    assert got.value == pytest.approx(_brute(scores, labels, criterion))
    assert got.details["level"] == "image"
    maps = [rng.random((6, 5)).round(2) for _ in range(4)]
    masks = [m > 0.7 for m in maps]
    masks[0][0, 0] = True
    pixel = optimal_threshold(maps, masks, criterion)
    flat_s, flat_y = np.concatenate([m.ravel() for m in maps]), np.concatenate([g.ravel() for g in masks])
    assert pixel.value == pytest.approx(_brute(flat_s, flat_y, criterion))
    assert pixel.details["level"] == "pixel"


def test_fixed_and_percentile() -> None:
    assert fixed_threshold(0.3).value == 0.3
    maps = [np.linspace(0, 1, 101).reshape(1, -1), np.zeros((2, 2))]
    expected = np.percentile(np.concatenate([maps[0].ravel(), np.zeros(4)]), 99)
    got = percentile_threshold(maps, 99)
    assert got.rule == "percentile" and got.value == pytest.approx(expected)
    assert got.details["n_maps"] == 2
    with pytest.raises(ExportError, match="finite"):
        fixed_threshold(float("nan"))
    with pytest.raises(ExportError, match="no normal"):
        percentile_threshold([], 99)
    with pytest.raises(ExportError, match="one class"):
        optimal_threshold(np.array([0.1, 0.2]), np.array([1, 1]), "f1")


def test_resolve_specs_from_prediction_folders(make_run, png_source) -> None:
    rows = [manifest_row(png_source(f"n{i}.png", (8, 8)), "image", label=i % 2) for i in range(4)]
    maps = [np.full((8, 8), 0.1 * (i + 1), np.float32) for i in range(4)]
    folder, manifest = make_run(rows, maps, scores=[0.1, 0.9, 0.2, 0.8])
    normals = resolve_threshold(f"percentile:100:{folder}", run_dir=folder, manifest=manifest)
    assert normals.value == pytest.approx(0.3)
    youden = resolve_threshold("youden", run_dir=folder, manifest=manifest)
    assert youden.value == pytest.approx(0.8) and youden.details["in_sample"] is True
    f1 = resolve_threshold(f"f1:{folder}", run_dir=folder, manifest=manifest)
    assert f1.value == pytest.approx(0.8)
    assert resolve_threshold("fixed:0.25", run_dir=folder, manifest=manifest).value == 0.25
    for bad in ("fixed:abc", "percentile:99", "otsu"):
        with pytest.raises(ExportError):
            resolve_threshold(bad, run_dir=folder, manifest=manifest)
