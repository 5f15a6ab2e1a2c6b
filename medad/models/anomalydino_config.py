"""AnomalyDINO's config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the
model is :mod:`medad.models.anomalydino`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.config import BackboneName, IntTuple, PathText, TextFreeDinoConfig, check_layers
from medad.models.kind import ModelKind
from medad.models.registry import register_model

RELEASE_BACKBONE = "vit_small_patch14_dinov2.lvd142m"
"""The release's default backbone (``dinov2_vits14`` from torch.hub) under its timm name."""


class AnomalyDINOConfig(TextFreeDinoConfig):
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

    def check(self) -> None:
        """Check values that need no backbone."""
        self.check_common()
        check_layers(self.layers)
        if not 0 < self.image_topk <= 1:
            raise ConfigError(f"image_topk must be in (0, 1], got {self.image_topk}")
        if self.image_size <= 0 or self.chunk < 1 or self.smoothing_sigma < 0:
            raise ConfigError("image_size and chunk must be positive and smoothing_sigma >= 0")


TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch14_dinov2",
    "backbone_overrides": {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 16},
    "layers": (2,),
    "image_size": 64,
    "random_init": True,
}

DINOV3_TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch16_dinov3",
    "backbone_overrides": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    "layers": (2,),
    "image_size": 64,
    "random_init": True,
}


register_model(
    "anomalydino",
    AnomalyDINOConfig,
    kind=ModelKind.TRAINING_FREE,
    module="medad.models.anomalydino",
    needs_references=True,
    description=(
        "AnomalyDINO as released: nearest-neighbour patch distance to k normal references on frozen DINOv2 "
        "ViT-S/14 (last block, 448 px); training-free, needs --reference."
    ),
)
register_model(
    "anomalydino_tiny",
    AnomalyDINOConfig,
    kind=ModelKind.TRAINING_FREE,
    module="medad.models.anomalydino",
    needs_references=True,
    description="A tiny random-weights anomalydino (2-block 64-d DINOv2-like ViT, 16 px patches, 64 px) for tests.",
    defaults=TINY_DEFAULTS,
)
register_model(
    "anomalydino_dinov3",
    AnomalyDINOConfig,
    kind=ModelKind.TRAINING_FREE,
    module="medad.models.anomalydino",
    needs_references=True,
    description=(
        "AnomalyDINO's rule on frozen DINOv3 ViT-L/16 (last block, 512 px), the backbone of medad's other "
        "models."
    ),
    defaults={"backbone": "vit_large_patch16_dinov3.lvd1689m", "layers": (24,), "image_size": 512},
)
register_model(
    "anomalydino_dinov3_tiny",
    AnomalyDINOConfig,
    kind=ModelKind.TRAINING_FREE,
    module="medad.models.anomalydino",
    needs_references=True,
    description="A tiny random-weights anomalydino_dinov3 (2-block 64-d DINOv3-like ViT, 64 px) for tests.",
    defaults=DINOV3_TINY_DEFAULTS,
)
