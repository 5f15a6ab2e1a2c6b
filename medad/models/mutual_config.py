"""``dinov3_mutual``'s config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them);
the model is :mod:`medad.models.mutual`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.config import BackboneName, IntTuple, PathText, TextFreeDinoConfig, check_layers
from medad.models.kind import ModelKind
from medad.models.registry import register_model

FEATURE_DTYPE_NAMES = ("float32", "float16", "bfloat16")
"""Storage dtypes of a scoring set's features (torch's names)."""


class MutualConfig(TextFreeDinoConfig):
    """Configuration of ``dinov3_mutual`` (recorded in the card).

    Attributes:
        backbone: timm DINOv3 ViT name (with or without pretrained tag).
        backbone_weights: ``None`` for the hub weights, or a local weights file.
        backbone_overrides: Extra timm keyword arguments (tiny test models).
        layers: 1-based tapped blocks; their scores are averaged.
        image_size: Input side in pixels (a multiple of the patch size).
        k_fraction: Fraction of the other images whose smallest nearest-patch distances are averaged.
        image_score: ``max``, ``global`` (top-``image_topk`` mean of the patch scores) or ``blend`` (their mean).
        image_topk: Fraction of the grid's patches averaged by the ``global`` image score.
        smoothing_sigma: Gaussian sigma (pixels) on the map; 0 = off.
        block_elements: Entries of one distance block (memory bound, ~4 bytes each).
        feature_dtype: Storage dtype of a set's features (``float16`` halves memory; distances are float32).
        compat: Accepted for protocol symmetry; no text is used.
        random_init: Seeded random backbone weights (tests); labelled ``random_weights``.
        init_seed: Seed of the random weights.
    """

    backbone: BackboneName = "vit_large_patch16_dinov3.lvd1689m"
    backbone_weights: PathText = None
    backbone_overrides: dict[str, Any] = Field(default_factory=dict)
    layers: IntTuple = (6, 12, 18, 24)
    image_size: int = 512
    k_fraction: float = 0.3
    image_score: str = "blend"
    image_topk: float = 0.01
    smoothing_sigma: float = 0.0
    block_elements: int = 1 << 25
    feature_dtype: str = "float32"
    compat: str = "clean"
    random_init: bool = False
    init_seed: int = 0

    label: ClassVar[str] = "dinov3_mutual"

    def check(self) -> None:
        """Check values that need no backbone."""
        self.check_common()
        check_layers(self.layers)
        if not 0 < self.k_fraction <= 1 or not 0 < self.image_topk <= 1:
            raise ConfigError("k_fraction and image_topk must be in (0, 1]")
        if self.feature_dtype not in FEATURE_DTYPE_NAMES:
            raise ConfigError(f"feature_dtype must be one of {', '.join(FEATURE_DTYPE_NAMES)}")
        if self.image_size <= 0 or self.block_elements < 1 or self.smoothing_sigma < 0:
            raise ConfigError("image_size and block_elements must be positive and smoothing_sigma >= 0")


TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch16_dinov3",
    "backbone_overrides": {"depth": 4, "embed_dim": 64, "num_heads": 2},
    "layers": (2, 4),
    "image_size": 64,
    "random_init": True,
}


register_model(
    "dinov3_mutual",
    MutualConfig,
    kind=ModelKind.TRANSDUCTIVE,
    module="medad.models.mutual",
    description=(
        "MuSc-style mutual scoring on frozen DINOv3 ViT-L/16 (layers 6/12/18/24, 512 px); transductive, no text."
    ),
)
register_model(
    "dinov3_mutual_tiny",
    MutualConfig,
    kind=ModelKind.TRANSDUCTIVE,
    module="medad.models.mutual",
    description="A tiny random-weights dinov3_mutual (4-block 64-d DINOv3-like ViT, 64 px) for tests and demos.",
    defaults=TINY_DEFAULTS,
)
