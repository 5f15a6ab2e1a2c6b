"""Every metric against the slow references in ``reference.py`` on random and adversarial inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medad.errors import DataError
from medad.metrics import (
    ImageMetrics,
    NotApplicable,
    PixelMetrics,
    aupro,
    dice_iou,
    image_ap,
    image_auroc,
    image_f1_max,
    mean_over_classes,
    pixel_ap,
    pixel_auroc,
    pixel_curves,
    pixel_f1_max,
    pixel_metrics,
    roc_curve,
)
from tests.metrics.reference import ref_ap, ref_aupro, ref_auroc, ref_f1_max


def _random_case(seed: int, n: int = 4, size: int = 12, levels: int | None = None):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size)).astype(np.float32)
    if levels:
        maps = (np.floor(maps * levels) / levels).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    for k in range(n - 1):
        r, c = rng.integers(0, size - 4, 2)
        masks[k, r : r + rng.integers(1, 5), c : c + rng.integers(1, 5)] = True
        masks[k, rng.integers(0, size), rng.integers(0, size)] = True
    maps[masks] += np.float32(0.3)
    return maps, masks


CASES = {
    "random": _random_case(0),
    "ties": _random_case(1, levels=5),
    "heavy_ties": _random_case(2, levels=2),
    "constant": (np.full((3, 8, 8), 0.5, np.float32), _random_case(3, n=3, size=8)[1]),
    "single_pixel": (
        np.random.default_rng(4).random((2, 9, 9)).astype(np.float32),
        np.pad(np.ones((1, 1), bool), ((4, 4), (4, 4)))[None].repeat(2, 0) & np.array([True, False])[:, None, None],
    ),
    "perfect_jump": (
        np.where(_random_case(5)[1], 1.0, 0.0).astype(np.float32),
        _random_case(5)[1],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pixel_metrics_equal_reference(name: str) -> None:
    maps, masks = CASES[name]
    got = pixel_metrics(maps, masks)
    assert got["pixel_auroc"] == pytest.approx(ref_auroc(maps, masks), abs=1e-9)
    assert got["pixel_ap"] == pytest.approx(ref_ap(maps, masks), abs=1e-9)
    assert got["pixel_f1_max"] == pytest.approx(ref_f1_max(maps, masks), abs=1e-9)
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-9)
    assert aupro(maps, masks, connectivity=4) == pytest.approx(ref_aupro(maps, masks, 0.3, 4), abs=1e-9)
    assert pixel_auroc(maps, masks) == got["pixel_auroc"]
    assert pixel_ap(maps, masks) == got["pixel_ap"]
    assert pixel_f1_max(maps, masks) == got["pixel_f1_max"]


def test_connectivity_matters_for_diagonal_components() -> None:
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 2, 3] = True
    maps = np.zeros((1, 6, 6), np.float32)
    maps[0, 1, 1] = 1.0
    assert aupro(maps, masks, fpr_limit=1.0, connectivity=8) == pytest.approx(ref_aupro(maps, masks, 1.0, 8))
    assert aupro(maps, masks, fpr_limit=1.0, connectivity=4) == pytest.approx(ref_aupro(maps, masks, 1.0, 4))
    assert aupro(maps, masks, 1.0, 8) != pytest.approx(aupro(maps, masks, 1.0, 4))


def test_negative_zero_ties_with_zero() -> None:
    maps = np.array([[[-0.0, 0.0], [0.0, -0.0]]], np.float32)
    masks = np.array([[[True, False], [True, False]]])
    assert pixel_auroc(maps, masks) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_image_metrics_equal_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(40), 1 if seed % 2 else 6)
    labels = rng.integers(0, 2, 40)
    assert image_auroc(scores, labels) == pytest.approx(ref_auroc(scores, labels), abs=1e-12)
    assert image_ap(scores, labels) == pytest.approx(ref_ap(scores, labels), abs=1e-12)
    assert image_f1_max(scores, labels) == pytest.approx(ref_f1_max(scores, labels), abs=1e-12)
    assert image_auroc(torch.as_tensor(scores), torch.as_tensor(labels)) == image_auroc(scores, labels)


def test_accumulators_equal_one_shot() -> None:
    rng = np.random.default_rng(7)
    maps, masks = _random_case(8, n=9, size=16, levels=50)
    whole = pixel_metrics(maps, masks)
    acc = PixelMetrics(memory_limit_bytes=1500, block_elements=64)
    for start in (0, 2, 3, 7):
        stop = {0: 2, 2: 3, 3: 7, 7: 9}[start]
        acc.update(torch.as_tensor(maps[start:stop]), masks[start:stop])
    assert any(not isinstance(r, np.ndarray) for r in acc._runs)  # some runs were spilled to disk
    got = acc.compute()
    for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro", "pixel_f1_threshold"):
        assert got[key] == pytest.approx(whole[key], abs=1e-12)
    halves = [PixelMetrics(), PixelMetrics()]
    halves[0].update(maps[:5], masks[:5])
    halves[1].update(maps[5:], masks[5:])
    assert PixelMetrics.merged(halves).compute()["aupro"] == pytest.approx(whole["aupro"], abs=1e-12)
    scores, labels = rng.random(30), rng.integers(0, 2, 30)
    img = ImageMetrics()
    img.update(scores[:10], labels[:10])
    img.update(scores[10:], labels[10:])
    assert img.compute()["image_auroc"] == pytest.approx(ref_auroc(scores, labels), abs=1e-12)


def test_not_applicable_cases() -> None:
    maps = np.random.default_rng(0).random((2, 5, 5)).astype(np.float32)
    empty = np.zeros((2, 5, 5), bool)
    full = np.ones((2, 5, 5), bool)
    for value in (pixel_auroc(maps, empty), pixel_ap(maps, empty), aupro(maps, empty)):
        assert isinstance(value, NotApplicable) and "anomalous" in value.reason
    for value in (pixel_auroc(maps, full), aupro(maps, full)):
        assert isinstance(value, NotApplicable) and "normal" in value.reason
    assert isinstance(image_auroc([0.1, 0.2], [1, 1]), NotApplicable)
    assert isinstance(image_ap([0.1, 0.2], [0, 0]), NotApplicable)
    assert isinstance(PixelMetrics().compute()["aupro"], NotApplicable)
    assert isinstance(mean_over_classes({"a": 0.5, "b": NotApplicable("x")}), NotApplicable)
    assert mean_over_classes({"a": 0.5, "b": 0.7}) == pytest.approx(0.6)
    with pytest.raises(DataError):
        pixel_auroc(np.full((1, 2, 2), np.nan, np.float32), empty[:1, :2, :2])
    with pytest.raises(DataError):
        image_auroc([0.1, 0.2], [0, 2])


def test_curves_and_dice() -> None:
    maps, masks = CASES["random"]
    curves = pixel_curves(maps, masks, max_points=20)
    for name in ("roc", "pr", "pro"):
        series = next(iter(curves[name].values()))
        assert 2 <= len(series) <= 20
    assert curves["roc"]["fpr"][0] == 0.0 and curves["roc"]["fpr"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(curves["roc"]["fpr"]) >= 0)
    roc = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert roc["fpr"] == [0.0, 0.0, 0.5, 0.5, 1.0] and roc["tpr"] == [0.0, 0.5, 0.5, 1.0, 1.0]
    pred = np.zeros((3, 4, 4), np.float32)
    pred[0, :2] = 1.0
    gt = np.zeros((3, 4, 4), bool)
    gt[0, :1] = True
    gt[1, 0, 0] = True
    out = dice_iou(pred, gt, threshold=0.5)
    assert out["dice"][0] == pytest.approx(2 * 4 / 12) and out["iou"][0] == pytest.approx(0.5)
    assert out["dice"][1] == 0.0 and np.isnan(out["dice"][2]) and np.isnan(out["iou"][2])


def test_huge_ties_are_read_in_pieces() -> None:
    maps, masks = _random_case(9, n=20, size=16, levels=2)
    acc = PixelMetrics(block_elements=1)
    acc.update(maps[:12], masks[:12])
    acc.update(maps[12:], masks[12:])
    got = acc.compute()
    assert got["pixel_auroc"] == pytest.approx(ref_auroc(maps, masks), abs=1e-12)
    assert got["aupro"] == pytest.approx(ref_aupro(maps, masks), abs=1e-12)
