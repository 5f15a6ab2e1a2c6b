"""``anomalydino``: AnomalyDINO (Damm et al., WACV 2025; release dammsi/AnomalyDINO, Apache-2.0), re-derived: a
training-free few-shot detector that scores each patch by its distance to the nearest patch of ``k`` normal
reference images, on frozen DINO features.

Rule (what the release computes, re-derived here with medad's own code):

* Features: the final-norm patch tokens of the last block of a frozen DINO (released: DINOv2 ViT-S/14, images
  resized to 448 px; ``anomalydino_dinov3`` puts the same rule on DINOv3 ViT-L/16 at 512 px).
* Memory: every reference patch (no neighbourhood aggregation, radius 1); the patch score is the nearest-neighbour
  cosine distance ``1 - cos`` (the release's faiss L2 search on unit vectors, halved). medad halves it once more
  into [0, 1] (:class:`~medad.models.patch_memory.PatchMemory`); rankings are unchanged.
* Optional foreground mask (``masking``): the first principal component of a target's own patch tokens,
  thresholded at ``mask_threshold`` (10); if the central 60% of the grid keeps at most 35% of its patches, the
  opposite side of the component is the foreground; then a dilation and a closing of width 3 (as released: along
  the row-major patch order, the mask being a ``(P, 1)`` column there). Masked-out patches score 0. The release
  masks the targets only (``mask_ref_images`` off by default), and uses the mask for MVTec's capsule, hazelnut,
  pill, screw and toothbrush and for every VisA class; medad leaves it off by default (medical images have no
  object-on-background layout the threshold was tuned for) and documents it in docs/models.md.
* Image score: the mean of the top 1% of the patch scores (``floor(1% of the patches)``; the maximum when that is
  0), the release's ``mean_top1p``. The map is the grid upsampled bilinearly and smoothed (Gaussian, sigma 4 px).

AnomalyDINO cannot score without references (``needs_references``): :meth:`AnomalyDINO.forward` refuses until
:meth:`AnomalyDINO.add_references` was called; the engine scores it through the model contract (memory of
:meth:`reference_features`, :meth:`fewshot_patch_scores`, :meth:`fewshot_image_scores`). The release's rotation
augmentation of the references is not re-derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from medad.errors import ConfigError
from medad.models import head
from medad.models.base import AnomalyModel, Features, InferenceBatch, ModelKind, patch_grids, policy_image_scores
from medad.models.config import BackboneName, IntTuple, ModelConfig, PathText, check_layers
from medad.models.dinov3 import FrozenDino, build_frozen_dino, check_geometry, needed_backbone
from medad.models.patch_memory import PatchMemory
from medad.models.registry import model_config, register_model

RELEASE_BACKBONE = "vit_small_patch14_dinov2.lvd142m"
"""The release's default backbone (``dinov2_vits14`` from torch.hub) under its timm name."""


def mean_top_percent(scores: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """The release's ``mean_top1p``: per row of ``(B, P)`` scores, the mean of the ``floor(fraction * P)`` largest,
    or the maximum when that count is 0."""
    count = int(scores.shape[1] * fraction)
    if count == 0:
        return scores.amax(dim=1)
    return torch.topk(scores, count, dim=1).values.mean(dim=1)


def first_component(tokens: torch.Tensor) -> torch.Tensor:
    """Scores ``(P,)`` of ``(P, C)`` tokens on their first principal component (float32), with scikit-learn's sign
    rule (the component's largest-magnitude loading is positive), as the release's ``PCA(n_components=1)``."""
    x = tokens.float()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    component = vh[0]
    component = component * torch.sign(component[component.abs().argmax()])
    return x @ component


def _dilate(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Dilation of a flat ``(P,)`` mask along the patch order (the release dilates its ``(P, 1)`` column)."""
    return F.max_pool1d(mask[None, None].float(), kernel, stride=1, padding=kernel // 2)[0, 0] > 0


def _erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Erosion where outside the sequence does not count (OpenCV's default border)."""
    return ~_dilate(~mask, kernel)


def foreground_mask(
    tokens: torch.Tensor, threshold: float = 10.0, border: float = 0.2, kernel: int = 3
) -> torch.Tensor:
    """AnomalyDINO's PCA foreground mask of one image.

    Args:
        tokens: ``(h, w, C)`` patch tokens (not normalised: the threshold is on their scale).
        threshold: Foreground where the first-component score exceeds it.
        border: Share of each side left out of the central check.
        kernel: Side of the dilation and closing.

    Returns:
        ``(h, w)`` bool: True for foreground patches. As in the release (``compute_background_mask``), the dilation
        and closing run on the mask as a ``(h * w, 1)`` column, i.e. along the row-major patch order (a patch's
        neighbours are the previous and next patch, across row ends), not over the 2-D grid.
    """
    h, w, _ = tokens.shape
    score = first_component(tokens.reshape(h * w, -1))
    mask = score > threshold
    centre = mask.reshape(h, w)[int(h * border) : int(h * (1 - border)), int(w * border) : int(w * (1 - border))]
    if centre.sum() <= centre.numel() * 0.35:
        mask = -score > threshold
    mask = _dilate(mask, kernel)
    return _erode(_dilate(mask, kernel), kernel).reshape(h, w)


class AnomalyDINOConfig(ModelConfig):
    """Configuration of ``anomalydino`` (recorded in the card).

    Attributes:
        backbone: timm DINOv2 or DINOv3 ViT name (with or without pretrained tag).
        backbone_weights: ``None`` for the hub weights, or a local weights file.
        backbone_overrides: Extra timm keyword arguments (tiny test models).
        layers: 1-based tapped blocks (the release: the last one); their distances are averaged.
        image_size: Input side in pixels (a multiple of the patch size).
        masking: Zero the scores of background patches (PCA foreground mask of each target).
        mask_threshold: Threshold on the first-component score.
        image_score: ``global`` (mean of the top ``image_topk`` patch scores, the release's), ``max`` or ``blend``.
        image_topk: Fraction of the patches averaged by the ``global`` score.
        smoothing_sigma: Gaussian sigma (pixels) on the upsampled map; 0 = off.
        chunk: Block size of the nearest-neighbour search.
        compat: Accepted for protocol symmetry; no text is used.
        random_init: Seeded random backbone weights (tests); labelled ``random_weights``.
        init_seed: Seed of the random weights.
    """

    backbone: BackboneName = RELEASE_BACKBONE
    backbone_weights: PathText = None
    backbone_overrides: dict[str, Any] = Field(default_factory=dict)
    layers: IntTuple = (12,)
    image_size: int = 448
    masking: bool = False
    mask_threshold: float = 10.0
    image_score: str = "global"
    image_topk: float = 0.01
    smoothing_sigma: float = 4.0
    chunk: int = 4096
    compat: str = "clean"
    random_init: bool = False
    init_seed: int = 0

    label: ClassVar[str] = "anomalydino"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """Refuse text weights: AnomalyDINO uses no text."""
        if cfg.get("text_weights") is not None:
            raise ConfigError("anomalydino uses no text: remove `weights: {text: ...}` for this model")
        cfg.pop("text_weights", None)
        return cfg

    def check(self) -> None:
        """Check values that need no backbone."""
        self.check_common()
        check_layers(self.layers)
        if not 0 < self.image_topk <= 1:
            raise ConfigError(f"image_topk must be in (0, 1], got {self.image_topk}")
        if self.image_size <= 0 or self.chunk < 1 or self.smoothing_sigma < 0:
            raise ConfigError("image_size and chunk must be positive and smoothing_sigma >= 0")


class AnomalyDINO(AnomalyModel):
    """The ``anomalydino`` model (training-free; needs normal reference images)."""

    kind: ClassVar[ModelKind] = ModelKind.TRAINING_FREE
    config_class = AnomalyDINOConfig
    config: AnomalyDINOConfig
    needs_references: ClassVar[bool] = True
    fewshot_weight: ClassVar[float] = 1.0
    """The few-shot map is the whole map: AnomalyDINO has no zero-shot map to fuse with."""
    fewshot_radii: ClassVar[tuple[int, ...] | None] = (1,)

    def __init__(self, config: AnomalyDINOConfig, name: str = "anomalydino") -> None:
        self.check_config(config)
        super().__init__(config, name)
        self.layers = tuple(config.layers)
        vit, self.backbone_info, self.mean, self.std = build_frozen_dino(config, name)
        self.grid = config.image_size // vit.patch_embed.patch_size[0]
        self.backbone = FrozenDino(vit, self.layers)
        self.memory: PatchMemory | None = None

    @classmethod
    def needed_weights(cls, config: ModelConfig) -> dict[str, dict[str, str]]:
        """The DINO backbone (none with ``random_init``)."""
        assert isinstance(config, AnomalyDINOConfig)
        return needed_backbone(config)

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Layers and image size against the backbone (:func:`~medad.models.dinov3.check_geometry`)."""
        assert isinstance(config, AnomalyDINOConfig)
        check_geometry(config)

    @torch.no_grad()
    def reference_features(self, images: torch.Tensor, class_names: list[str] | None = None) -> Features:
        """The final-norm patch tokens of the tapped blocks, ``{"layer<l>": (B, g, g, C)}`` float32, not normalised
        (the mask's threshold is on their scale; the memory compares them by cosine). ``class_names`` is unused."""
        self.check_images(images)
        tokens = self.backbone.model.forward_intermediates(
            images, indices=self.backbone.indices, norm=True, intermediates_only=True, output_fmt="NLC"
        )
        return patch_grids(torch.stack(tokens, dim=1).float(), self.layers)

    def add_references(self, images: torch.Tensor) -> None:
        """Add normalised ``(B, 3, S, S)`` normal images to the model's own memory (library use of :meth:`forward`)."""
        if self.memory is None:
            self.memory = PatchMemory(self.fewshot_radii or (1,), self.config.chunk)
        self.memory.add(self.reference_features(images))

    def clear_references(self) -> None:
        """Forget the references added with :meth:`add_references`."""
        self.memory = None

    def foreground(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, g, g)`` bool foreground masks of targets from their first tapped layer (all True without
        ``masking``)."""
        tokens = next(iter(features.values()))
        if not self.config.masking:
            return torch.ones(tokens.shape[:3], dtype=torch.bool, device=tokens.device)
        return torch.stack([foreground_mask(t, self.config.mask_threshold) for t in tokens])

    def fewshot_patch_scores(self, memory: PatchMemory, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Nearest-neighbour distances ``(B, g, g)`` in [0, 1], 0 on masked-out background patches."""
        return memory.score(features) * self.foreground(features)

    def fewshot_image_scores(self, fused: torch.Tensor, zero_shot: InferenceBatch | None) -> torch.Tensor:
        """The image policy on a few-shot map ``(B, S, S)``: ``global`` is the mean of the top ``image_topk`` patch
        scores, read on the map averaged back onto the patch grid (the engine hands over the upsampled map)."""
        with torch.autocast(fused.device.type, enabled=False):
            grid = F.adaptive_avg_pool2d(fused[:, None].float(), self.grid)[:, 0]
            top = mean_top_percent(grid.flatten(1), self.config.image_topk)
        return policy_image_scores(self.config.image_score, top, fused)

    def forward(self, images: torch.Tensor, class_names: list[str] | None = None) -> InferenceBatch:
        """Score images against the references of :meth:`add_references`: the release's map (upsampled and
        smoothed) and image score (top-1% mean of the patch scores); refused without references."""
        if self.memory is None:
            raise ConfigError(
                f"{self.name} scores images against normal reference images and has none: pass "
                "--reference NORMALS --shots K to medad score (library: score(..., references=...) or "
                "model.add_references(images))"
            )
        features = self.reference_features(images)
        with torch.autocast(images.device.type, enabled=False):
            grid = self.fewshot_patch_scores(self.memory, features)
            pixel = F.interpolate(grid[:, None], size=self.image_size, mode="bilinear", align_corners=False)[:, 0]
            pixel = head.gaussian_blur(pixel, self.config.smoothing_sigma).clamp(0.0, 1.0)
            top = mean_top_percent(grid.flatten(1), self.config.image_topk)
        return InferenceBatch(pixel, policy_image_scores(self.config.image_score, top, pixel))

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen DINO (``backbone``) weights."""
        return {"backbone": self.backbone_info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The ViT's ``forward_intermediates``."""
        return [(self.backbone.model, "forward_intermediates")]

    def card_extras(self) -> dict[str, Any]:
        """The tapped ``layers``, the patch grid, ``needs_references: True`` and ``transductive: False``."""
        return {
            "layers": list(self.layers),
            "patch_grid": self.grid,
            "needs_references": True,
            "transductive": False,
        }


@register_model(AnomalyDINO)
def anomalydino(**cfg: Any) -> AnomalyDINO:
    """AnomalyDINO as released: nearest-neighbour patch distance to k normal references on frozen DINOv2 ViT-S/14
    (last block, 448 px); training-free, needs --reference."""
    return AnomalyDINO(model_config("anomalydino", AnomalyDINOConfig, **cfg), name="anomalydino")


TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch14_dinov2",
    "backbone_overrides": {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 16},
    "layers": (2,),
    "image_size": 64,
    "random_init": True,
}


@register_model(AnomalyDINO, defaults=TINY_DEFAULTS)
def anomalydino_tiny(**cfg: Any) -> AnomalyDINO:
    """A tiny random-weights ``anomalydino`` (2-block 64-d DINOv2-like ViT, 16 px patches, 64 px) for tests."""
    return AnomalyDINO(model_config("anomalydino_tiny", AnomalyDINOConfig, **cfg), name="anomalydino_tiny")


@register_model(
    AnomalyDINO, defaults={"backbone": "vit_large_patch16_dinov3.lvd1689m", "layers": (24,), "image_size": 512}
)
def anomalydino_dinov3(**cfg: Any) -> AnomalyDINO:
    """AnomalyDINO's rule on frozen DINOv3 ViT-L/16 (last block, 512 px), the backbone of medad's other models."""
    return AnomalyDINO(model_config("anomalydino_dinov3", AnomalyDINOConfig, **cfg), name="anomalydino_dinov3")


DINOV3_TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch16_dinov3",
    "backbone_overrides": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    "layers": (2,),
    "image_size": 64,
    "random_init": True,
}


@register_model(AnomalyDINO, defaults=DINOV3_TINY_DEFAULTS)
def anomalydino_dinov3_tiny(**cfg: Any) -> AnomalyDINO:
    """A tiny random-weights ``anomalydino_dinov3`` (2-block 64-d DINOv3-like ViT, 64 px) for tests."""
    return AnomalyDINO(
        model_config("anomalydino_dinov3_tiny", AnomalyDINOConfig, **cfg), name="anomalydino_dinov3_tiny"
    )
