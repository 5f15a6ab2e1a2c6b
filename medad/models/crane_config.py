"""Crane / Crane+'s config and catalogue entries (no torch: ``medad validate`` and ``medad models`` read them); the
model is :mod:`medad.models.crane`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from medad.errors import ConfigError
from medad.models.anomalyclip_config import TINY_DEFAULTS, AnomalyCLIPConfig
from medad.models.backbones import check_geometry, clip_geometry
from medad.models.config import IntTuple, PathText
from medad.models.kind import ModelKind
from medad.models.registry import register_model
from medad.models.weight_ids import backbone_licence, clip_licence

ATTENTIONS = ("vv", "kk", "qq", "qq+kk", "qq+kk+vv")
"""E-Attn kinds: the pairs ``a a^T`` whose softmax weights are summed (the release's ``attn_type``)."""

DINOV2_REG = "vit_base_patch14_reg4_dinov2.lvd142m"
"""The release's D-Attn model (``dinov2_vitb14_reg``, Apache-2.0) under its timm name."""

CRANE_LAYERS = (6, 12, 18, 24)
"""Crane's tapped layers (Crane+ taps only 24)."""


class CraneConfig(AnomalyCLIPConfig):
    """Configuration of a Crane / Crane+ model: AnomalyCLIP's fields (``dpam_layers`` counts the E-Attn blocks)
    plus the ones below (every field is recorded in the model card).

    Attributes:
        attention: E-Attn kind (``qq+kk+vv``; ``vv`` is AnomalyCLIP's V-V path).
        image_prompt_train: Put the image embedding in the prompt in training (the release: yes).
        image_prompt_eval: Also when scoring (the paper; the release's test script: no).
        soft_mean: Map = mean of the per-map probabilities (the release's medical runs); else softmax of the mean
            upsampled logits.
        train_interpolation: Upsampling of the training maps (``nearest`` as released, or ``bilinear``).
        pooling_alpha: Weight of the score-pooled patch feature in the image feature (0.5; 0: the CLS alone).
        train_image_temperature: Temperature of the image logits of the loss (0.01; scoring uses ``temperature``).
        seg_loss_weight: Weight of the focal and dice terms (2).
        image_loss_weight: Weight of the image cross entropy (0.2).
        dino_backbone: timm name of the frozen DINO of D-Attn (``None``: Crane, no D-Attn).
        dino_weights: ``None`` for the hub weights of ``dino_backbone``, or a local file.
        dino_overrides: Extra timm keyword arguments of the DINO (tiny test models).
        dino_image_size: Side the images are resized to for the DINO (``None``: ``image_size``, as released).
        dattn_beta: D-Attn similarities are shifted by ``beta`` x their mean (1.2).
        dattn_gamma: ... and scaled by ``gamma`` (3) before the negatives are dropped.
        dattn_mean: ``image`` (the mean of each image's similarities) or ``batch`` (the release: over the batch).
        both_attentions: Crane+ maps from both the D-Attn and the E-Attn tokens of a tapped block (the release).
        eattn_taps: ``final`` (the release: every E-Attn tap on the CLIP grid holds the tokens after the last
            block, since its taps are views of one tensor that later blocks add to in place; Crane's maps of
            6/12/18/24 are then four copies of the last one) or ``per_layer`` (each block's own, the paper).
        deep_tokens_fp16: ``False``: unlike AnomalyCLIP's default, Crane keeps its deep text tokens in float32 (the
            release rounds them to float16; a documented difference, see docs/models.md).
        epoch: Training epoch of the prompts this model scores with (recorded; with ``release_prompts`` the file
            must be the release's ``epoch_<epoch>.pth``). The release: 5; Crane+ on medical sets: 1.
    """

    layers: IntTuple = CRANE_LAYERS
    deep_tokens_fp16: bool = False
    embedding_ln_post: bool = True
    attention: str = "qq+kk+vv"
    image_prompt_train: bool = True
    image_prompt_eval: bool = False
    soft_mean: bool = True
    train_interpolation: str = "nearest"
    pooling_alpha: float = 0.5
    train_image_temperature: float = 0.01
    seg_loss_weight: float = 2.0
    image_loss_weight: float = 0.2
    dino_backbone: str | None = None
    dino_weights: PathText = None
    dino_overrides: dict[str, Any] = Field(default_factory=dict)
    dino_image_size: int | None = None
    dattn_beta: float = 1.2
    dattn_gamma: float = 3.0
    dattn_mean: str = "image"
    both_attentions: bool = True
    eattn_taps: str = "final"
    epoch: int | None = None

    label: ClassVar[str] = "Crane"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """A protocol's ``weights.backbone`` is the DINO file of D-Attn (Crane+ only); ``weights.text`` the CLIP."""
        dino_keys = [key for key in ("backbone", "backbone_weights") if key in cfg]
        if dino_keys and not cfg.get("dino_backbone"):
            raise ConfigError(
                "crane has no DINO branch (no separate backbone): give the CLIP file as `weights: {clip: ...}`, or "
                "use crane_plus for D-Attn"
            )
        if "backbone" in cfg:
            cfg["dino_backbone"] = cfg.pop("backbone")
        if "backbone_weights" in cfg:
            cfg["dino_weights"] = cfg.pop("backbone_weights")
        if cfg.get("random_init"):
            cfg["dino_weights"] = None
        return super().prepare(cfg)

    def check(self) -> None:
        """AnomalyCLIP's checks, then the options of E-Attn, the maps, the image score and D-Attn."""
        super().check()
        choices = {
            "attention": (self.attention, ATTENTIONS),
            "train_interpolation": (self.train_interpolation, ("nearest", "bilinear")),
            "dattn_mean": (self.dattn_mean, ("image", "batch")),
            "eattn_taps": (self.eattn_taps, ("final", "per_layer")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0.0 <= self.pooling_alpha <= 1.0 or self.train_image_temperature <= 0:
            raise ConfigError("pooling_alpha must be in [0, 1] and train_image_temperature positive")
        if self.epoch is not None and self.epoch < 1:
            raise ConfigError(f"epoch must be >= 1 (the release: 5; 1 for Crane+ on medical sets), got {self.epoch}")
        if self.dino_image_size is not None and self.dino_image_size <= 0:
            raise ConfigError("dino_image_size must be positive (or null: the image_size)")
        self._check_release_epoch()

    def check_architecture(self) -> None:
        """AnomalyCLIP's checks; tapped layers inside the E-Attn blocks; the image embedding must fit a text
        token (Crane's prompts); the DINO's image size and patch size (no weights read)."""
        super().check_architecture()
        cfg = clip_geometry(self.clip_model, self.clip_overrides)
        depth = int(cfg["vision_cfg"]["layers"])
        first = depth - self.dpam_layers + 1
        if min(self.layers) < first:
            raise ConfigError(
                f"layers {list(self.layers)} must be E-Attn blocks {first}..{depth} (the last dpam_layers="
                f"{self.dpam_layers}); raise dpam_layers or tap later blocks"
            )
        width = int(cfg["text_cfg"]["width"])
        if (self.image_prompt_train or self.image_prompt_eval) and int(cfg["embed_dim"]) != width:
            raise ConfigError(
                f"the image embedding ({cfg['embed_dim']}-d) cannot be a token of the {width}-d text tower; set "
                "image_prompt_train and image_prompt_eval to false for this CLIP"
            )
        if self.dino_backbone is not None:
            check_geometry(DinoFields(self))

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The open_clip CLIP (both towers) and, for Crane+, the DINO of D-Attn (none with ``random_init``)."""
        if self.random_init:
            return {}
        spec = f"{self.clip_model}/{self.clip_weights}"
        needed = {"clip": {"id": spec, "licence": clip_licence(str(self.clip_weights)), "option": "--text-weights"}}
        if self.dino_backbone is not None:
            dino = self.dino_weights or self.dino_backbone
            licence = backbone_licence(self.dino_backbone)
            needed["dino"] = {"id": dino, "licence": licence, "option": "--backbone-weights"}
        return needed

    def _check_release_epoch(self) -> None:
        """A pinned ``epoch`` must be the one of the release file ``epoch_N.pth`` given as ``release_prompts``."""
        if self.epoch is None or self.release_prompts is None:
            return
        found = re.fullmatch(r"epoch_(\d+)\.pth", Path(self.release_prompts).name)
        if found is None or int(found.group(1)) != self.epoch:
            raise ConfigError(
                f"release_prompts {Path(self.release_prompts).name!r} is not the pinned epoch {self.epoch}: pass the "
                f"release's checkpoints/<run>/epoch_{self.epoch}.pth (or change epoch)"
            )


class DinoFields:
    """A Crane config's DINO seen as :class:`~medad.models.backbones.DinoConfig`."""

    def __init__(self, config: CraneConfig) -> None:
        self.backbone = str(config.dino_backbone)
        self.backbone_weights, self.backbone_overrides = config.dino_weights, config.dino_overrides
        self.layers: tuple[int, ...] = ()
        self.image_size = config.dino_image_size or config.image_size
        self.random_init, self.init_seed = config.random_init, config.init_seed + 2


CRANE_TINY: dict[str, Any] = {**TINY_DEFAULTS, "layers": (2, 3)}
DINO_TINY: dict[str, Any] = {"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 8, "reg_tokens": 4}


def _register(name: str, description: str, defaults: dict[str, Any] | None = None) -> None:
    """Register a Crane preset."""
    register_model(
        name, CraneConfig, kind=ModelKind.TRAINABLE, module="medad.models.crane", description=description,
        defaults=defaults,
    )  # fmt: skip


_register("crane", "Crane on OpenAI CLIP ViT-L/14@336 at 518 px: E-Attn, maps of layers 6/12/18/24, no D-Attn.")
_register(
    "crane_tiny",
    "A tiny random-weights Crane (AnomalyCLIP's tiny CLIP, maps of blocks 2 and 3) for tests and demos.",
    CRANE_TINY,
)
_register(
    "crane_plus",
    "Crane+: Crane with D-Attn from a frozen DINOv2 ViT-B/14-reg at block 24 (DINOv3: set dino_backbone).",
    {"layers": (24,), "dino_backbone": DINOV2_REG},
)
_register(
    "crane_plus_tiny",
    "A tiny random-weights Crane+ (tiny CLIP, a 1-block 32-d DINOv2-reg with 8-px patches: an 8 x 8 D-Attn grid "
    "over the CLIP's 4 x 4) for tests and demos.",
    {**TINY_DEFAULTS, "dino_backbone": DINOV2_REG, "dino_overrides": DINO_TINY},
)
