"""Focal, dice and total-loss definitions against hand-computed values."""

from __future__ import annotations

import math

import torch

from medad.models.losses import ad_dinov3_loss, dice_loss, focal_loss, prepare_masks


def _focal_term(p_target: float, p_other: float) -> float:
    pt = (1 - 1e-5) * p_target + 1e-5 * p_other + 1e-5
    return -((1 - pt) ** 2) * math.log(pt)


def test_focal_on_probabilities() -> None:
    probs = torch.tensor([[[[0.1, 0.8]], [[0.9, 0.2]]]])  # (1, 2, 1, 2): pixel 0 abnormal-ish, pixel 1 normal
    target = torch.tensor([[[1, 0]]])
    expected = (_focal_term(0.9, 0.1) + _focal_term(0.8, 0.2)) / 2
    assert math.isclose(focal_loss(probs, target).item(), expected, rel_tol=1e-5)
    assert math.isclose(focal_loss(probs, target.unsqueeze(1)).item(), expected, rel_tol=1e-5)


def test_dice_on_anomaly_channel() -> None:
    probs = torch.tensor([[[0.9, 0.2]], [[0.5, 0.5]]])
    mask = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    d0 = (2 * 0.9 + 1) / (1.1 + 1 + 1)
    d1 = (0 + 1) / (1.0 + 0 + 1)
    assert math.isclose(dice_loss(probs, mask).item(), 1 - (d0 + d1) / 2, rel_tol=1e-6)


def test_masks_resized_bilinear_then_thresholded() -> None:
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1.0
    out = prepare_masks(mask, 8)
    assert out.shape == (1, 1, 8, 8)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert out[0, 0, 0, 0] == 1 and out[0, 0, 7, 7] == 0 and out[0, 0, 4, 4] == 0


def test_total_loss_weights() -> None:
    gen = torch.Generator().manual_seed(0)
    seg = torch.softmax(torch.randn(2, 2, 4, 4, generator=gen), dim=1)
    aacm = torch.softmax(torch.randn(2, 2, 4, 4, generator=gen), dim=1)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    masks = (torch.rand(2, 1, 4, 4, generator=gen) > 0.5).float()
    labels = torch.tensor([0, 1])
    out = ad_dinov3_loss(seg, aacm, logits, masks, labels)
    ce = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    target = masks.squeeze(1)
    l_seg = focal_loss(seg, target) + dice_loss(seg[:, 1], target)
    l_aacm = focal_loss(aacm, target) + dice_loss(aacm[:, 1], target)
    assert math.isclose(out["global"].item(), ce, rel_tol=1e-6)
    assert math.isclose(out["total"].item(), 0.25 * l_aacm.item() + 0.5 * l_seg.item() + 0.25 * ce, rel_tol=1e-6)
