"""AD-DINOv3's config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the model
is :mod:`medad.models.ad_dinov3`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.backbones import check_geometry, needed_backbone
from medad.models.config import BackboneName, IntTuple, ModelConfig, PathText, check_layers
from medad.models.kind import ModelKind
from medad.models.registry import register_model
from medad.models.weight_ids import clip_licence, is_local_weights

TEXT_ACTIVATIONS = ("auto", "gelu", "quickgelu")


class ADDINOv3Config(ModelConfig):
    """Configuration of an AD-DINOv3 model (every field is recorded in the model card).

    Attributes:
        backbone: timm DINOv3 ViT name (with or without pretrained tag).
        backbone_weights: ``None`` for the hub weights of ``backbone`` or a local ``.safetensors/.pth/.bin`` file.
        backbone_overrides: Extra timm keyword arguments (tiny test models).
        layers: 1-based indices of the tapped blocks.
        image_size: Input side in pixels; a multiple of the patch size.
        text_model: open_clip config name of the text tower.
        text_weights: open_clip pretrained tag (``openai``), ``hf-hub:<repo>`` or a local file.
        text_overrides: Merged into open_clip's model config (tiny test models).
        text_activation: ``auto`` (``reference``: GELU; ``clean``: QuickGELU for OpenAI weights, i.e. the ``openai``
            tag or a local file, else open_clip's setting), ``gelu`` or ``quickgelu``.
        compat: ``clean`` or ``reference``.
        image_score: ``global`` (softmax of the CLS-vs-text logits), ``max`` (of the pixel map) or ``blend`` (their
            mean; the default).
        smoothing_sigma: Gaussian sigma (pixels) applied to the pixel map; 0 = off (as released).
        adapter_dim: Adapter output width.
        random_init: Seeded random frozen weights (tests, demos); results are labelled as random.
        init_seed: Seed of the random frozen weights.
        text_disk_cache: Cache text embeddings under ``$MEDAD_CACHE``.
    """

    backbone: BackboneName = "vit_large_patch16_dinov3.lvd1689m"
    backbone_weights: PathText = None
    backbone_overrides: dict[str, Any] = Field(default_factory=dict)
    layers: IntTuple = (6, 12, 18, 24)
    image_size: int = 512
    text_model: str = "ViT-L-14-336"
    text_weights: PathText = "openai"
    text_overrides: dict[str, Any] = Field(default_factory=dict)
    text_activation: str = "auto"
    compat: str = "clean"
    image_score: str = "blend"
    smoothing_sigma: float = 0.0
    adapter_dim: int = 768
    random_init: bool = False
    init_seed: int = 0
    text_disk_cache: bool = True

    label: ClassVar[str] = "AD-DINOv3"

    def check(self) -> None:
        """Check the values that need no backbone; raise :class:`ConfigError` naming the key and the fix."""
        self.check_common()
        if self.text_activation not in TEXT_ACTIVATIONS:
            raise ConfigError(f"text_activation must be one of {', '.join(TEXT_ACTIVATIONS)}")
        check_layers(self.layers)
        if self.image_size <= 0 or self.adapter_dim <= 0 or self.smoothing_sigma < 0:
            raise ConfigError("image_size and adapter_dim must be positive and smoothing_sigma >= 0")
        if not self.random_init and self.text_weights is None:
            raise ConfigError(
                "this AD-DINOv3 model has real backbone weights but no text weights (random_init is off and no "
                "text weights were given, as with --backbone-weights alone on a random-weights preset): give the CLIP "
                "text weights too, --text-weights FILE|TAG on the command line, text_weights='openai' or a file in "
                "Python, `weights: {text: ...}` in a protocol"
            )

    def check_architecture(self) -> None:
        """Layers and image size against the DINOv3 architecture (:func:`~medad.models.backbones.check_geometry`)."""
        check_geometry(self)

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The DINOv3 backbone and the CLIP text tower (none with ``random_init``)."""
        if self.random_init:
            return {}
        text = {"id": f"{self.text_model}/{self.text_weights}", "licence": clip_licence(self.text_weights),
                "option": "--text-weights"}  # fmt: skip
        return {**needed_backbone(self), "text": text}

    def resolved_quick_gelu(self) -> bool:
        """Whether the text tower uses QuickGELU under this config (see ``text_activation``; reads open_clip's
        configs, so it imports torch: called when the model is built)."""
        import open_clip

        from medad.models.weights import text_model_config

        if self.text_activation != "auto":
            return self.text_activation == "quickgelu"
        if self.compat == "reference":
            return False
        if self.random_init:
            return bool(text_model_config(self.text_model, self.text_overrides).get("quick_gelu", False))
        if self.text_weights == "openai" or is_local_weights(self.text_weights):
            return True
        if self.text_weights and not self.text_weights.startswith("hf-hub:") and "/" not in self.text_weights:
            return bool(open_clip.get_pretrained_cfg(self.text_model, self.text_weights).get("quick_gelu", False))
        return bool(text_model_config(self.text_model, self.text_overrides).get("quick_gelu", False))


TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_small_patch16_dinov3",
    "backbone_overrides": {"depth": 4, "embed_dim": 64, "num_heads": 2},
    "layers": (1, 2, 3, 4),
    "image_size": 112,
    "text_model": "ViT-B-32",
    "text_weights": None,
    "text_overrides": {"embed_dim": 32, "text_cfg": {"width": 32, "heads": 2, "layers": 1}},
    "adapter_dim": 32,
    "random_init": True,
}


register_model(
    "ad_dinov3",
    ADDINOv3Config,
    kind=ModelKind.TRAINABLE,
    module="medad.models.ad_dinov3",
    description="AD-DINOv3 with DINOv3 ViT-L/16 (layers 6/12/18/24, 512 px) and the CLIP ViT-L-14-336 text tower.",
)
register_model(
    "ad_dinov3_tiny",
    ADDINOv3Config,
    kind=ModelKind.TRAINABLE,
    module="medad.models.ad_dinov3",
    description=(
        "A tiny random-weights AD-DINOv3 (4-block 64-d DINOv3-like ViT, 1-layer 32-d text tower) for tests/demos."
    ),
    defaults=TINY_DEFAULTS,
)
