"""WinCLIP's config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the model
is :mod:`medad.models.winclip`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.backbones import needed_clip
from medad.models.config import IntTuple, ModelConfig, PathText
from medad.models.kind import ModelKind
from medad.models.registry import register_model


class WinCLIPConfig(ModelConfig):
    """Configuration of a WinCLIP model (every field is recorded in the card).

    Attributes:
        clip_model: open_clip config name (both towers are used).
        clip_weights: open_clip pretrained tag (``laion400m_e31``), ``hf-hub:<repo>`` or a local weights file;
            ``None`` only with ``random_init``.
        clip_overrides: Merged into open_clip's config (``vision_cfg``/``text_cfg`` key-wise; tiny test models).
        image_size: Input side in pixels (a multiple of the patch size; the positional embedding is resized).
        scales: Window sides in patches (each <= the patch grid).
        window_stride: Step between windows in patches.
        patch_map: Average the patch-level map (final patch tokens vs text) into the pixel map.
        image_in_map: Average the image score (broadcast) into the pixel map, as the paper's image scale.
        temperature: Softmax temperature of the cosine similarities (0.01 = CLIP's logit scale 100).
        image_score: ``global`` (the CLS zero-shot score, the paper's classifier), ``max`` (of the pixel map) or
            ``blend`` (their mean).
        smoothing_sigma: Gaussian sigma in pixels applied to the map (0 = off).
        window_batch: Window sequences per transformer call (bounds memory; on CPU a call also holds at most
            ``winclip.CPU_TOKENS_PER_CALL`` tokens).
        compat: Class-word rule used by the scorer (``clean`` or ``reference``, see ``prompt_word``).
        random_init: Seeded random weights (tests, demos); labelled ``random_weights`` in the card.
        init_seed: Seed of the random weights.
    """

    clip_model: str = "ViT-B-16-plus-240"
    clip_weights: PathText = "laion400m_e31"
    clip_overrides: dict[str, Any] = Field(default_factory=dict)
    image_size: int = 240
    scales: IntTuple = (2, 3)
    window_stride: int = 1
    patch_map: bool = True
    image_in_map: bool = True
    temperature: float = 0.01
    image_score: str = "global"
    smoothing_sigma: float = 0.0
    window_batch: int = 4096
    compat: str = "clean"
    random_init: bool = False
    init_seed: int = 0

    label: ClassVar[str] = "WinCLIP"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """``text_weights`` (a protocol's ``weights.text``) names the CLIP checkpoint; there is no backbone key."""
        if "backbone" in cfg or "backbone_weights" in cfg:
            raise ConfigError(
                "WinCLIP has no separate backbone weights: its CLIP file holds both towers; pass it as --text-weights "
                "FILE on the command line, clip_weights=... in create_model or `weights: {text: ...}` in a protocol"
            )
        if "text_weights" in cfg:
            cfg.setdefault("clip_weights", cfg.pop("text_weights"))
            cfg.pop("text_weights", None)
        if cfg.get("random_init"):
            cfg["clip_weights"] = None
        return cfg

    def check(self) -> None:
        """Check the values that need no model; raise :class:`ConfigError` naming the key."""
        self.check_common()
        if not self.scales and not self.patch_map:
            raise ConfigError("winclip needs at least one window scale or patch_map: true for its pixel map")
        if any(k < 1 for k in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"scales must be distinct window sides >= 1 (in patches), got {list(self.scales)}")
        if self.temperature <= 0 or self.window_batch < 1 or self.window_stride < 1 or self.smoothing_sigma < 0:
            raise ConfigError("temperature, window_batch and window_stride must be positive, smoothing_sigma >= 0")
        if self.clip_weights is None and not self.random_init:
            raise ConfigError(
                "clip_weights is None: give an open_clip tag, a local file, or random_init=True (on the command line: "
                "--text-weights FILE|TAG)"
            )

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The open_clip CLIP (both towers; none with ``random_init``)."""
        return needed_clip(self)


TINY_DEFAULTS: dict[str, Any] = {
    "clip_model": "ViT-B-32",
    "clip_weights": None,
    "clip_overrides": {
        "embed_dim": 32,
        "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"width": 32, "heads": 2, "layers": 1},
    },
    "image_size": 64,
    "random_init": True,
}


register_model(
    "winclip",
    WinCLIPConfig,
    kind=ModelKind.TRAINING_FREE,
    module="medad.models.winclip",
    description="WinCLIP with open_clip ViT-B-16-plus-240 (laion400m_e31) at 240 px, windows 2x2 and 3x3.",
)
register_model(
    "winclip_tiny",
    WinCLIPConfig,
    kind=ModelKind.TRAINING_FREE,
    module="medad.models.winclip",
    description="A tiny random-weights WinCLIP (2-layer 32-d ViT/16, 1-layer text tower, 64 px) for tests and demos.",
    defaults=TINY_DEFAULTS,
)
