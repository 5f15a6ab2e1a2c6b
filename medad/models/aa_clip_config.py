"""AA-CLIP's config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the model
is :mod:`medad.models.aa_clip`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.backbones import (
    check_clip_geometry,
    check_geometry,
    check_pos_interpolation,
    clip_file_options,
    clip_geometry,
    needed_backbone,
    text_geometry,
)
from medad.models.config import BackboneName, IntTuple, ModelConfig, PathText, check_layers
from medad.models.kind import ModelKind
from medad.models.registry import register_model
from medad.models.weight_ids import clip_licence

BLURS = {"industrial": (1.0, 7), "medical": (1.5, 9)}
"""The release's test-map Gaussian (sigma, taps) by target domain."""


STAGE1_LEVELS = ("last", "all")


class AAClipConfig(ModelConfig):
    """Configuration of an AA-CLIP model (every field is recorded in the model card).

    Attributes:
        clip_model: open_clip config name of the CLIP (both towers; the text tower only for ``aa_clip_dinov3``).
        clip_weights: open_clip tag (``openai``), ``hf-hub:<repo>`` or a local CLIP file.
        clip_overrides: Merged into open_clip's config (tiny test models).
        quick_gelu: QuickGELU in the CLIP towers (what OpenAI trained with); off by default as in the release,
            whose ``create_model`` builds ``CLIP(**config)`` from a JSON without ``quick_gelu`` (GELU) and loads
            the OpenAI weights into it.
        pos_interpolation: ``bilinear`` (the release) or ``bicubic`` (open_clip).
        levels: 1-based tapped vision blocks (6/12/18/24).
        image_size: Input side in pixels (518 as released).
        text_adapt_until: Text blocks followed by an adapter (3).
        image_adapt_until: Vision blocks followed by an adapter (6).
        text_adapt_weight: Share ``w`` of the adapter output in the text mixing (0.1).
        image_adapt_weight: Share ``w`` of the adapter output in the vision mixing (0.1).
        relu: LeakyReLU after the per-level and detection projections (the release's ``--relu``; off in its
            scripts). The text projection always has it, as released.
        text_epochs: Epochs of stage 1 (5); later epochs are stage 2. 0: no stage 1 (the release then scores with
            CLIP's own text embeddings; medad keeps the untrained adapters: train at least one text epoch).
        text_lr_scale: Stage-1 learning rate over the run's rate (the release: 1e-5 / 5e-4 = 0.02).
        orthogonal_weight: Weight of the orthogonality loss of the anchors (0.1).
        stage1_levels: ``last`` (the release's loop keeps only the last level's map loss) or ``all``.
        surgery_layers: Last vision blocks whose attention is the V-V path in stage 1's frozen features (19: the
            release's ``surgery_until_layer=20`` replaces blocks ``-1 .. -19``).
        surgery_attention: ``image`` (V-V attention over the tokens of each image, as CLIP Surgery) or ``batch``
            (over the images of the batch at each token position: what the release's code computes, because its
            replaced attention reads the sequence-first tensor as batch-first).
        domain: ``medical`` (sigma 1.5, 9 taps) or ``industrial`` (sigma 1, 7 taps): the test-map blur.
        compat: ``clean`` or ``reference`` (no behaviour differs).
        image_score: ``max`` (of the map; the release's medical score), ``global`` (``(<det, t_abn> + 1) / 2``)
            or ``blend``.
        random_init: Seeded random frozen weights (tests, demos).
        init_seed: Seed of the random frozen weights (the adapters are drawn from torch's global generator).
        release_text_adapter: The release's ``text_adapter.pth`` (``{"text_adapter": ...}``), read with
            ``release_image_adapter`` (``image_adapter[_N].pth``: ``{"image_adapter": ...}``) as the trained adapters
            (:func:`read_release_adapters`); both or neither.
        release_image_adapter: See ``release_text_adapter``.
    """

    clip_model: str = "ViT-L-14-336"
    clip_weights: PathText = "openai"
    clip_overrides: dict[str, Any] = Field(default_factory=dict)
    quick_gelu: bool = False
    pos_interpolation: str = "bilinear"
    levels: IntTuple = (6, 12, 18, 24)
    image_size: int = 518
    text_adapt_until: int = 3
    image_adapt_until: int = 6
    text_adapt_weight: float = 0.1
    image_adapt_weight: float = 0.1
    relu: bool = False
    text_epochs: int = 5
    text_lr_scale: float = 0.02
    orthogonal_weight: float = 0.1
    stage1_levels: str = "last"
    surgery_layers: int = 19
    surgery_attention: str = "image"
    domain: str = "medical"
    compat: str = "clean"
    image_score: str = "max"
    random_init: bool = False
    init_seed: int = 0
    release_text_adapter: PathText = None
    release_image_adapter: PathText = None

    label: ClassVar[str] = "AA-CLIP"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """A protocol's ``weights.text`` names the CLIP file; random weights drop any file."""
        return clip_file_options(cfg)

    def check(self) -> None:
        """Check the values that need no model; raise :class:`ConfigError` naming the key and the fix."""
        self.check_common()
        check_layers(self.levels)
        check_pos_interpolation(self.pos_interpolation)
        if min(self.text_adapt_until, self.image_adapt_until, self.text_epochs, self.surgery_layers) < 0:
            raise ConfigError("text_adapt_until, image_adapt_until, text_epochs and surgery_layers must be >= 0")
        if not (0 <= self.text_adapt_weight <= 1 and 0 <= self.image_adapt_weight <= 1):
            raise ConfigError("text_adapt_weight and image_adapt_weight must be in [0, 1]")
        if self.text_lr_scale <= 0 or self.orthogonal_weight < 0 or self.image_size <= 0:
            raise ConfigError("text_lr_scale and image_size must be positive, orthogonal_weight >= 0")
        if self.domain not in BLURS:
            raise ConfigError(f"domain must be one of {', '.join(BLURS)} (the test-map blur), got {self.domain!r}")
        if self.stage1_levels not in STAGE1_LEVELS or self.surgery_attention not in ("image", "batch"):
            raise ConfigError("stage1_levels must be 'last' or 'all', surgery_attention 'image' or 'batch'")
        if self.clip_weights is None and not self.random_init:
            raise ConfigError("clip_weights is None: give an open_clip tag, a local CLIP file, or random_init=True")
        if (self.release_text_adapter is None) != (self.release_image_adapter is None):
            raise ConfigError(
                "give both release_text_adapter (text_adapter.pth) and release_image_adapter (image_adapter_N.pth) "
                "of one AA-CLIP release run, or neither"
            )

    def check_architecture(self) -> None:
        """Levels, image size, surgery and adapter depths against the CLIP architecture (no weights read)."""
        text_layers = int(text_geometry(self.clip_model, self.clip_overrides)["text_cfg"]["layers"])
        check_clip_geometry(self.clip_model, self.image_size, self.levels, self.clip_overrides)
        vision_cfg = clip_geometry(self.clip_model, self.clip_overrides)["vision_cfg"]
        depth, patch = int(vision_cfg["layers"]), int(vision_cfg["patch_size"])
        if self.surgery_layers > depth:
            raise ConfigError(f"surgery_layers {self.surgery_layers} exceeds the {depth} vision blocks")
        self.check_adapters(depth, patch, text_layers)

    def check_adapters(self, depth: int, patch: int, text_layers: int) -> None:
        """The test-map blur's patch grid and the adapter depths against the vision depth and the text blocks."""
        _check_grid(self, patch)
        if self.image_adapt_until > depth:
            raise ConfigError(f"image_adapt_until {self.image_adapt_until} exceeds the tapped depth {depth}")
        if self.text_adapt_until > text_layers:
            raise ConfigError(f"text_adapt_until {self.text_adapt_until} exceeds the {text_layers} text blocks")

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The CLIP file (both towers; none with ``random_init``)."""
        if self.random_init:
            return {}
        return {"backbone": self.needed_clip(), "text": self.needed_clip()}

    def needed_clip(self) -> dict[str, str]:
        """The ``needed_weights`` entry of the CLIP file."""
        return {"id": f"{self.clip_model}/{self.clip_weights}", "licence": clip_licence(self.clip_weights),
                "option": "--text-weights"}  # fmt: skip


def _check_grid(config: AAClipConfig, patch: int) -> None:
    """The test-map blur reflects its borders: the patch grid must be wider than half its taps."""
    taps = BLURS[config.domain][1]
    if config.image_size // patch <= taps // 2:
        raise ConfigError(
            f"the {config.domain} blur ({taps} taps) needs a patch grid wider than {taps // 2}, got "
            f"{config.image_size // patch} ({config.image_size} px / patch {patch}); use a larger image_size"
        )


class AAClipDinoConfig(AAClipConfig):
    """An AA-CLIP on a frozen DINOv3 (``aa_clip_dinov3``): the CLIP fields name the text tower only.

    Attributes:
        backbone: timm DINOv3 ViT name.
        backbone_weights: ``None`` for the hub weights of ``backbone`` or a local weights file.
        backbone_overrides: Extra timm keyword arguments (tiny test models).
    """

    backbone: BackboneName = "vit_large_patch16_dinov3.lvd1689m"
    backbone_weights: PathText = None
    backbone_overrides: dict[str, Any] = Field(default_factory=dict)
    image_size: int = 512

    label: ClassVar[str] = "AA-CLIP (DINOv3)"

    @property
    def layers(self) -> tuple[int, ...]:
        """The tapped levels (the name :func:`~medad.models.backbones.check_geometry` reads)."""
        return tuple(self.levels)

    def check_architecture(self) -> None:
        """Levels and image size against the DINOv3 architecture, the adapter depths against the tapped depth and
        the CLIP text tower (no weights read)."""
        text_layers = int(text_geometry(self.clip_model, self.clip_overrides)["text_cfg"]["layers"])
        geometry = check_geometry(self)
        self.check_adapters(max(self.levels), geometry.patch, text_layers)  # check_geometry refused deeper levels

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The DINOv3 backbone and the CLIP file of the text tower (none with ``random_init``)."""
        if self.random_init:
            return {}
        return {**needed_backbone(self), "text": self.needed_clip()}


TINY_DEFAULTS: dict[str, Any] = {
    "clip_model": "ViT-B-16",
    "clip_overrides": {
        "embed_dim": 32,
        "vision_cfg": {"layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"width": 32, "heads": 2, "layers": 2},
    },
    "levels": (1, 2, 3),
    "image_size": 64,
    "text_adapt_until": 1,
    "image_adapt_until": 2,
    "surgery_layers": 2,
    "text_epochs": 1,
    "random_init": True,
}


DINO_TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch16_dinov3",
    "backbone_overrides": {"depth": 4, "embed_dim": 64, "num_heads": 2, "patch_size": 8},
    "levels": (1, 2, 3, 4),
    "image_size": 112,
    "clip_model": "ViT-B-32",
    "clip_overrides": {"embed_dim": 32, "text_cfg": {"width": 32, "heads": 2, "layers": 1}},
    "text_adapt_until": 1,
    "image_adapt_until": 2,
    "text_epochs": 1,
    "random_init": True,
}


def _register(name: str, config_class: type[AAClipConfig], description: str, defaults: dict[str, Any] | None) -> None:
    """Register an AA-CLIP preset."""
    register_model(
        name, config_class, kind=ModelKind.TRAINABLE, module="medad.models.aa_clip", description=description,
        defaults=defaults,
    )  # fmt: skip


_register(
    "aa_clip", AAClipConfig,
    "AA-CLIP on OpenAI CLIP ViT-L/14@336 at 518 px, levels 6/12/18/24, medical blur (sigma 1.5).", None,
)  # fmt: skip
_register(
    "aa_clip_tiny", AAClipConfig,
    "A tiny random-weights AA-CLIP (3-block 32-d ViT/8: an 8x8 grid, which the 9-tap medical blur needs; 2-block "
    "text tower, 64 px, one text epoch).",
    TINY_DEFAULTS,
)  # fmt: skip
_register(
    "aa_clip_dinov3", AAClipDinoConfig,
    "The AA-CLIP recipe on frozen DINOv3 ViT-L/16 (levels 6/12/18/24, 512 px) with the CLIP ViT-L-14-336 text.", None,
)  # fmt: skip
_register(
    "aa_clip_dinov3_tiny", AAClipDinoConfig,
    "A tiny random-weights aa_clip_dinov3 (ad_dinov3_tiny's 4-block 64-d DINOv3-like ViT with 8 px patches, which "
    "the 9-tap medical blur needs at 64 px; 1-block 32-d text tower, 112 px).",
    DINO_TINY_DEFAULTS,
)  # fmt: skip
