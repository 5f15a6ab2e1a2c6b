"""AD-DINOv3 training losses (focal on probabilities, anomaly-channel dice, weighted total)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_WEIGHTS = {"aacm": 0.25, "seg": 0.5, "global": 0.25}
"""Weights of the three terms of the total loss, as released."""


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on probabilities (no non-linearity is applied to ``probs``).

    Args:
        probs: ``(B, K, H, W)`` class probabilities.
        target: ``(B, H, W)`` or ``(B, 1, H, W)`` integer class map in ``[0, K)``.
        gamma: Focusing exponent.
        smooth: One-hot clamp ``[smooth, 1 - smooth]`` and the term added to ``pt``.

    Returns:
        Scalar ``mean(-(1 - pt)^gamma * log(pt))`` over every pixel, with ``pt = sum_k onehot_k p_k + smooth``.
    """
    if target.dim() == probs.dim():
        target = target.squeeze(1)
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    onehot = onehot.clamp(smooth, 1.0 - smooth)
    pt = (onehot * probs).sum(dim=1) + smooth
    return (-((1.0 - pt) ** gamma) * pt.log()).mean()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary dice loss ``1 - mean_b[(2 sum(p m) + 1) / (sum p + sum m + 1)]``.

    Args:
        probs: ``(B, H, W)`` anomaly probabilities.
        target: ``(B, H, W)`` or ``(B, 1, H, W)`` binary mask.
        smooth: Added to numerator and denominator.

    Returns:
        Scalar loss.
    """
    p = probs.reshape(probs.shape[0], -1)
    m = target.reshape(target.shape[0], -1).to(p.dtype)
    dice = (2.0 * (p * m).sum(dim=1) + smooth) / (p.sum(dim=1) + m.sum(dim=1) + smooth)
    return 1.0 - dice.mean()


def prepare_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, 1, H, W)`` masks bilinearly to ``size`` and binarise at ``> 0.5`` (as released)."""
    masks = masks.float()
    if masks.shape[-2:] != (size, size):
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
    return (masks > 0.5).float()


def ad_dinov3_loss(
    seg: torch.Tensor, aacm: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The released total loss ``0.25 (focal + dice)(AACM) + 0.5 (focal + dice)(CMCL) + 0.25 CE``.

    Args:
        seg: ``(B, 2, S, S)`` CMCL probabilities ``M``.
        aacm: ``(B, 2, S, S)`` AACM probabilities ``A``.
        logits: ``(B, 2)`` global logits.
        masks: ``(B, 1, H, W)`` masks in ``{0, 1}`` (resized to ``S`` and binarised here).
        labels: ``(B,)`` image labels in ``{0, 1}``.

    Returns:
        ``total`` (to backpropagate) and the terms ``aacm``, ``seg``, ``global``, ``focal_seg``, ``dice_seg``,
        ``focal_aacm``, ``dice_aacm``.
    """
    target = prepare_masks(masks, seg.shape[-1]).squeeze(1)
    focal_seg, dice_seg = focal_loss(seg, target), dice_loss(seg[:, 1], target)
    focal_aacm, dice_aacm = focal_loss(aacm, target), dice_loss(aacm[:, 1], target)
    loss_seg = focal_seg + dice_seg
    loss_aacm = focal_aacm + dice_aacm
    loss_global = F.cross_entropy(logits, labels.long())
    total = LOSS_WEIGHTS["aacm"] * loss_aacm + LOSS_WEIGHTS["seg"] * loss_seg + LOSS_WEIGHTS["global"] * loss_global
    return {
        "total": total,
        "aacm": loss_aacm.detach(),
        "seg": loss_seg.detach(),
        "global": loss_global.detach(),
        "focal_seg": focal_seg.detach(),
        "dice_seg": dice_seg.detach(),
        "focal_aacm": focal_aacm.detach(),
        "dice_aacm": dice_aacm.detach(),
    }
