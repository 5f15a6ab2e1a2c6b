"""The frozen DINOv3 backbone shared by AD-DINOv3 and ``dinov3_mutual``: its weights and the module that taps its
blocks (its config fields and geometry check are :mod:`medad.models.backbones`', which needs no torch)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medad.models import head
from medad.models.backbones import DinoConfig
from medad.models.base import RGB, Features, rgb
from medad.models.weights import build_backbone


class FrozenDino(nn.Module):
    """A frozen timm DINOv3 ViT (``.model``, always in eval mode) and the 0-based indices of its tapped blocks.

    Args:
        model: The timm model.
        layers: 1-based block numbers.
    """

    model: Any  # the timm ViT (see medad.models.weights.build_backbone)

    def __init__(self, model: nn.Module, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.indices = [v - 1 for v in layers]

    def train(self, mode: bool = True) -> FrozenDino:
        """Keep the frozen backbone in eval mode whatever ``mode`` is."""
        super().train(False)
        return self


class DinoBackbone(FrozenDino):
    """AD-DINOv3's features: standardised patch tokens and CLS tokens of the tapped layers."""

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        """Run all tapped layers in one batched forward.

        Args:
            images: ``(B, 3, S, S)`` normalised images.

        Returns:
            ``patch_tokens`` ``(B, L, N, C)``: final-norm patch tokens standardised per image and channel over the
            N tokens (unbiased std + 1e-6), prefix tokens (CLS + registers) removed; ``cls_tokens`` ``(B, L, C)``:
            final-norm CLS tokens, not standardised.
        """
        outs = self.model.forward_intermediates(
            images,
            indices=self.indices,
            norm=True,
            return_prefix_tokens=True,
            intermediates_only=True,
            output_fmt="NLC",
        )
        patch = torch.stack([head.standardise_tokens(p) for p, _ in outs], dim=1)
        cls = torch.stack([prefix[:, 0] for _, prefix in outs], dim=1)
        return {"patch_tokens": patch, "cls_tokens": cls}


def build_frozen_dino(config: DinoConfig, for_model: str = "") -> tuple[Any, dict[str, Any], RGB, RGB]:
    """Build the frozen timm DINOv3 of a config (``backbone``, ``backbone_weights``, ``backbone_overrides``,
    ``image_size``, ``random_init``, ``init_seed``) for the registered model ``for_model`` (named in messages).

    Returns:
        The timm ViT (``Any``, see :func:`~medad.models.weights.build_backbone`), its weights info (id, sha256,
        licence, source), and its normalisation mean and std.
    """
    vit, info = build_backbone(
        config.backbone,
        None if config.random_init else config.backbone_weights,
        random_init=config.random_init,
        img_size=config.image_size,
        overrides=config.backbone_overrides,
        init_seed=config.init_seed,
        for_model=for_model,
    )
    mean = rgb(vit.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = rgb(vit.pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
    return vit, info, mean, std


class DinoPatchBackbone(FrozenDino):
    """Frozen timm DINOv3 ViT (``.model``) returning L2-normalised final-norm patch tokens of the tapped layers
    (``dinov3_mutual``'s features; no CLS token, no standardisation)."""

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, L, P, C)`` unit patch vectors of the tapped layers."""
        outs = self.model.forward_intermediates(
            images, indices=self.indices, norm=True, intermediates_only=True, output_fmt="NLC"
        )
        return F.normalize(torch.stack(outs, dim=1).float(), dim=-1)  # (B, L, P, C)
