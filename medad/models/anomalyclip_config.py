"""AnomalyCLIP's config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the
model is :mod:`medad.models.anomalyclip`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.backbones import (
    check_clip_geometry,
    check_pos_interpolation,
    clip_file_options,
    clip_geometry,
    needed_clip,
)
from medad.models.config import IntTuple, ModelConfig, PathText, check_layers
from medad.models.kind import ModelKind
from medad.models.registry import register_model

PAPER_LAYERS = (6, 12, 18, 24)
"""The layers of the paper (the release's scripts before 2025-04-13)."""


class AnomalyCLIPConfig(ModelConfig):
    """Configuration of an AnomalyCLIP model (every field is recorded in the model card).

    Attributes:
        clip_model: open_clip config name of the CLIP (both towers).
        clip_weights: open_clip tag (``openai``), ``hf-hub:<repo>`` or a local CLIP file (both towers are read).
        clip_overrides: Merged into open_clip's config (tiny test models).
        quick_gelu: QuickGELU in both towers (what OpenAI trained with).
        pos_interpolation: ``bilinear`` (the release) or ``bicubic`` (open_clip).
        layers: 1-based tapped vision blocks (release: ``(24,)``; paper: ``(6, 12, 18, 24)``).
        image_size: Input side in pixels (518 as released).
        dpam_layers: How many of the last vision blocks run the V-V path beside the original one (19: the
            release's ``DPAM_layer=20`` replaces ``range(1, 20)`` blocks, i.e. blocks 6..24, as its comment says).
        embedding_ln_post: Apply ``ln_post`` to the CLS token before ``proj`` for the image embedding (CLIP's own
            embedding); the release projects the CLS token without it (``False``).
        n_ctx: Learnable context tokens per prompt (12).
        text_ctx: Deep learnable tokens per text block (4).
        text_depth: Text blocks up to which deep tokens are used (9: blocks 2..9 get them).
        deep_tokens_fp16: Round the deep tokens to float16 where they enter a text block, as the release does
            (``.half()`` in its text blocks, a leftover of MaPLe's fp16 CLIP, in an otherwise float32 model).
        temperature: Divides the cosine similarities (0.07).
        smoothing_sigma: Gaussian sigma (pixels) of the pixel map (4; borders as scipy's ``gaussian_filter``).
        compat: ``clean`` or ``reference`` (no behaviour differs: the prompts are object-agnostic).
        image_score: ``global`` (the release's), ``max`` or ``blend``.
        random_init: Seeded random frozen weights (tests, demos).
        init_seed: Seed of the random frozen weights.
        release_prompts: A prompt-learner checkpoint of the release (``epoch_15.pth``: ``{"prompt_learner": ...}``)
            loaded as the trained prompts (:func:`read_release_prompts`); ``None``: random, to be trained.
    """

    clip_model: str = "ViT-L-14-336"
    clip_weights: PathText = "openai"
    clip_overrides: dict[str, Any] = Field(default_factory=dict)
    quick_gelu: bool = True
    pos_interpolation: str = "bilinear"
    layers: IntTuple = (24,)
    image_size: int = 518
    dpam_layers: int = 19
    embedding_ln_post: bool = False
    n_ctx: int = 12
    text_ctx: int = 4
    text_depth: int = 9
    deep_tokens_fp16: bool = True
    temperature: float = 0.07
    smoothing_sigma: float = 4.0
    compat: str = "clean"
    image_score: str = "global"
    random_init: bool = False
    init_seed: int = 0
    release_prompts: PathText = None

    label: ClassVar[str] = "AnomalyCLIP"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """A protocol's ``weights.text`` names the same CLIP file; random weights drop any file."""
        return clip_file_options(cfg, only_clip="anomalyclip")

    def check(self) -> None:
        """Check the values that need no model; raise :class:`ConfigError` naming the key and the fix."""
        self.check_common()
        check_layers(self.layers)
        check_pos_interpolation(self.pos_interpolation)
        if min(self.n_ctx, self.text_ctx, self.text_depth) < 1 or self.dpam_layers < 0:
            raise ConfigError("n_ctx, text_ctx and text_depth must be >= 1 and dpam_layers >= 0")
        if self.temperature <= 0 or self.smoothing_sigma < 0 or self.image_size <= 0:
            raise ConfigError("temperature and image_size must be positive, smoothing_sigma >= 0")
        if self.clip_weights is None and not self.random_init:
            raise ConfigError("clip_weights is None: give an open_clip tag, a local CLIP file, or random_init=True")

    def check_architecture(self) -> None:
        """Layers, image size, DPAM and deep-token depths against the CLIP architecture (no weights read)."""
        check_clip_geometry(self.clip_model, self.image_size, self.layers, self.clip_overrides)
        cfg = clip_geometry(self.clip_model, self.clip_overrides)
        vision_cfg = cfg["vision_cfg"]
        if self.dpam_layers > int(vision_cfg["layers"]):
            raise ConfigError(f"dpam_layers {self.dpam_layers} exceeds the {vision_cfg['layers']} vision blocks")
        if self.text_depth > int(cfg["text_cfg"]["layers"]):
            raise ConfigError(f"text_depth {self.text_depth} exceeds the {cfg['text_cfg']['layers']} text blocks")

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The one CLIP checkpoint of both towers (none with ``random_init``)."""
        return needed_clip(self)


TINY_DEFAULTS: dict[str, Any] = {
    "clip_model": "ViT-B-16",
    "clip_overrides": {
        "embed_dim": 32,
        "vision_cfg": {"layers": 3, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"width": 32, "heads": 2, "layers": 2},
    },
    "layers": (3,),
    "image_size": 64,
    "dpam_layers": 2,
    "n_ctx": 4,
    "text_ctx": 2,
    "text_depth": 2,
    "random_init": True,
}


def _register(name: str, description: str, defaults: dict[str, Any] | None = None) -> None:
    """Register an AnomalyCLIP preset."""
    register_model(
        name, AnomalyCLIPConfig, kind=ModelKind.TRAINABLE, module="medad.models.anomalyclip",
        description=description, defaults=defaults,
    )  # fmt: skip


_register(
    "anomalyclip", "AnomalyCLIP on OpenAI CLIP ViT-L/14@336 at 518 px, layer-24 map (the release since 2025-04-13)."
)
_register(
    "anomalyclip_tiny",
    "A tiny random-weights AnomalyCLIP (3-block 32-d ViT/16, 2-block text tower, 64 px) for tests and demos.",
    TINY_DEFAULTS,
)
_register(
    "anomalyclip_paper",
    "AnomalyCLIP with the paper's maps of layers 6/12/18/24 (the release's scripts before 2025-04-13).",
    {"layers": PAPER_LAYERS},
)
_register(
    "anomalyclip_paper_tiny",
    "The tiny AnomalyCLIP with a map from every one of its 3 blocks (the paper variant's twin).",
    {**TINY_DEFAULTS, "layers": (1, 2, 3)},
)
