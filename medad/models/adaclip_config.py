"""AdaCLIP's config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the model
is :mod:`medad.models.adaclip`."""

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


class AdaCLIPConfig(ModelConfig):
    """Configuration of an AdaCLIP model (every field is recorded in the model card).

    Attributes:
        clip_model: open_clip config name of the CLIP (both towers).
        clip_weights: open_clip tag (``openai``), ``hf-hub:<repo>`` or a local CLIP file (both towers are read).
        clip_overrides: Merged into open_clip's config (tiny test models).
        quick_gelu: QuickGELU in both towers (what OpenAI trained with).
        pos_interpolation: ``bicubic`` (the release resizes the position embeddings as open_clip does).
        layers: 1-based tapped vision blocks (the release: 6/12/18/24).
        image_size: Input side in pixels (518 as released).
        prompt_length: Prompt tokens per block and tower (5).
        prompt_depth: Blocks of each tower that get prompts (4).
        k_clusters: K-means clusters of HSF (20); ``5 k`` tokens are clustered.
        hsf: ``release`` (the mean of the centres of the most abnormal tokens' clusters) or ``paper`` (the centre
            of the most abnormal cluster of all tokens, the paper's description and the release's earlier code).
        hsf_alpha: Weight of the HSF embedding against the projected image embedding (0.2).
        kmeans_seed: Seed of K-means' k-means++ start (the release leaves it unseeded).
        logit_scale: Multiplies the cosine similarities (100).
        smoothing_sigma: Gaussian sigma (pixels) of the pixel map (4).
        fp16_prompts: Round the prompts through float16 before they enter a tower, as the release's ``.half()``
            does (it trains under FP16 autocast); ``False`` keeps the compute dtype.
        dice_rows: The release's dice over image rows (``True``) or the paper's per-image dice (``False``).
        compat: ``clean`` or ``reference`` (the class word of the prompts, see ``medad.models.prompt_word``).
        image_score: ``global`` (the release's HSF score), ``max`` or ``blend``.
        random_init: Seeded random frozen weights (tests, demos).
        init_seed: Seed of the random frozen weights.
        release_weights: A checkpoint of the release (``torch.save`` of its trainer's learnable tensors, keys
            ``clip_model.<part>...``, e.g. ``pretrained_mvtec_colondb.pth``) loaded as the trained parts
            (:func:`read_release_weights`); ``None``: random, to be trained.
    """

    clip_model: str = "ViT-L-14-336"
    clip_weights: PathText = "openai"
    clip_overrides: dict[str, Any] = Field(default_factory=dict)
    quick_gelu: bool = True
    pos_interpolation: str = "bicubic"
    layers: IntTuple = (6, 12, 18, 24)
    image_size: int = 518
    prompt_length: int = 5
    prompt_depth: int = 4
    k_clusters: int = 20
    hsf: str = "release"
    hsf_alpha: float = 0.2
    kmeans_seed: int = 0
    logit_scale: float = 100.0
    smoothing_sigma: float = 4.0
    fp16_prompts: bool = True
    dice_rows: bool = True
    compat: str = "clean"
    image_score: str = "global"
    random_init: bool = False
    init_seed: int = 0
    release_weights: PathText = None

    label: ClassVar[str] = "AdaCLIP"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """A protocol's ``weights.text`` names the same CLIP file; random weights drop any file."""
        return clip_file_options(cfg, only_clip="adaclip")

    def check(self) -> None:
        """Check the values that need no model; raise :class:`ConfigError` naming the key and the fix."""
        self.check_common()
        check_layers(self.layers)
        check_pos_interpolation(self.pos_interpolation)
        if min(self.prompt_length, self.prompt_depth, self.k_clusters) < 1:
            raise ConfigError("prompt_length, prompt_depth and k_clusters must be >= 1")
        if self.hsf not in ("release", "paper"):
            raise ConfigError(f"hsf must be 'release' or 'paper', got {self.hsf!r}")
        if not 0.0 <= self.hsf_alpha <= 1.0:
            raise ConfigError(f"hsf_alpha must be in [0, 1], got {self.hsf_alpha}")
        if self.logit_scale <= 0 or self.smoothing_sigma < 0 or self.image_size <= 0:
            raise ConfigError("logit_scale and image_size must be positive, smoothing_sigma >= 0")
        if self.clip_weights is None and not self.random_init:
            raise ConfigError("clip_weights is None: give an open_clip tag, a local CLIP file, or random_init=True")

    def check_architecture(self) -> None:
        """Layers, image size and prompt depth against the CLIP architecture (no weights read)."""
        check_clip_geometry(self.clip_model, self.image_size, self.layers, self.clip_overrides)
        cfg = clip_geometry(self.clip_model, self.clip_overrides)
        blocks = min(int(cfg["vision_cfg"]["layers"]), int(cfg["text_cfg"]["layers"]))
        if self.prompt_depth > blocks:
            raise ConfigError(f"prompt_depth {self.prompt_depth} exceeds the {blocks} blocks of the smaller tower")
        tokens = (self.image_size // int(cfg["vision_cfg"]["patch_size"])) ** 2
        if self.k_clusters > tokens:
            raise ConfigError(f"k_clusters {self.k_clusters} exceeds the {tokens} patch tokens; lower k_clusters")

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
    "layers": (2, 3),
    "image_size": 64,
    "prompt_length": 2,
    "prompt_depth": 2,
    "k_clusters": 3,
    "random_init": True,
}


register_model(
    "adaclip",
    AdaCLIPConfig,
    kind=ModelKind.TRAINABLE,
    module="medad.models.adaclip",
    description=(
        "AdaCLIP on OpenAI CLIP ViT-L/14@336 at 518 px, layers 6/12/18/24, 5 prompt tokens in 4 blocks, HSF k=20."
    ),
)
register_model(
    "adaclip_tiny",
    AdaCLIPConfig,
    kind=ModelKind.TRAINABLE,
    module="medad.models.adaclip",
    description=(
        "A tiny random-weights AdaCLIP (3-block 32-d ViT/16, 2-block text tower, 64 px, k=3) for tests and demos."
    ),
    defaults=TINY_DEFAULTS,
)
