"""The frozen backbones a model config can name, without torch: their geometry (patch size, depth, width) from a
small table of the supported variants, the geometry checks ``medad validate`` runs, the ``needed_weights``
entries and the CLIP option helpers the configs share.

The tables hold what timm (DINOv3 / DINOv2 ViTs) and open_clip (CLIP ViTs) would build; ``tests/models/
test_backbones.py`` compares every row with timm's meta-device model and open_clip's config. A backbone outside
the tables is checked by timm / open_clip themselves (which imports torch).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from medad.errors import ConfigError
from medad.models.weight_ids import backbone_licence, clip_licence

DINO_VITS: dict[str, tuple[int, int, int]] = {
    "vit_small_patch16_dinov3": (16, 12, 384),
    "vit_small_patch16_dinov3_qkvb": (16, 12, 384),
    "vit_small_plus_patch16_dinov3": (16, 12, 384),
    "vit_small_plus_patch16_dinov3_qkvb": (16, 12, 384),
    "vit_tiny_patch16_dinov3_qkvb": (16, 12, 192),
    "vit_base_patch16_dinov3": (16, 12, 768),
    "vit_base_patch16_dinov3_qkvb": (16, 12, 768),
    "vit_large_patch16_dinov3": (16, 24, 1024),
    "vit_large_patch16_dinov3_qkvb": (16, 24, 1024),
    "vit_huge_plus_patch16_dinov3": (16, 32, 1280),
    "vit_huge_plus_patch16_dinov3_qkvb": (16, 32, 1280),
    "vit_7b_patch16_dinov3": (16, 40, 4096),
    "vit_small_patch14_dinov2": (14, 12, 384),
    "vit_small_patch14_reg4_dinov2": (14, 12, 384),
    "vit_base_patch14_dinov2": (14, 12, 768),
    "vit_base_patch14_reg4_dinov2": (14, 12, 768),
    "vit_large_patch14_dinov2": (14, 24, 1024),
    "vit_large_patch14_reg4_dinov2": (14, 24, 1024),
    "vit_giant_patch14_dinov2": (14, 40, 1536),
    "vit_giant_patch14_reg4_dinov2": (14, 40, 1536),
}
"""timm architecture (the name before the pretrained tag) -> (patch size, depth, embed dim)."""

CLIP_VITS: dict[str, dict[str, Any]] = {
    name: {"embed_dim": embed, "vision_cfg": vision, "text_cfg": text}
    for name, embed, vision, text in [
        (f"ViT-L-14{s}", 768, {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
         {"layers": 12, "width": 768}) for s in ("", "-quickgelu")
    ] + [
        ("ViT-L-14-336", 768, {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
         {"layers": 12, "width": 768}),
        ("ViT-B-16-plus-240", 640, {"image_size": 240, "layers": 12, "width": 896, "patch_size": 16},
         {"layers": 12, "width": 640}),
    ] + [
        (f"ViT-B-{p}{s}", 512, {"image_size": 224, "layers": 12, "width": 768, "patch_size": p},
         {"layers": 12, "width": 512}) for p in (16, 32) for s in ("", "-quickgelu")
    ]
}  # fmt: skip
"""open_clip model name -> the part of its config the geometry checks read (``embed_dim``; ``vision_cfg``:
``image_size``, ``layers``, ``width``, ``patch_size``; ``text_cfg``: ``layers``, ``width``)."""

POS_INTERPOLATIONS = ("bicubic", "bilinear")
"""How position embeddings reach another patch grid: open_clip's (antialiased bicubic) or the releases' bilinear."""


class DinoConfig(Protocol):
    """The config fields a frozen DINOv3 is built from (``ADDINOv3Config`` and ``MutualConfig`` have them)."""

    @property
    def backbone(self) -> str:
        """timm DINOv3 ViT name (with or without pretrained tag)."""

    @property
    def backbone_weights(self) -> str | None:
        """``None`` for the hub weights, or a local weights file."""

    @property
    def backbone_overrides(self) -> Mapping[str, Any]:
        """Extra timm keyword arguments (tiny test models)."""

    @property
    def layers(self) -> Sequence[int]:
        """1-based tapped blocks."""

    @property
    def image_size(self) -> int:
        """Input side in pixels."""

    @property
    def random_init(self) -> bool:
        """Seeded random weights instead of pretrained ones."""

    @property
    def init_seed(self) -> int:
        """Seed of the random weights."""


@dataclass(frozen=True)
class VitGeometry:
    """What the geometry checks read of a ViT: its patch size, depth (blocks) and width."""

    patch: int
    depth: int
    width: int


def dino_geometry(backbone: str, overrides: Mapping[str, Any]) -> VitGeometry:
    """The geometry of timm ViT ``backbone`` built with ``overrides`` (``patch_size``, ``depth``, ``embed_dim``
    replace the variant's, as timm's keyword arguments do); from :data:`DINO_VITS`, else from timm's model on the
    meta device (this imports torch)."""
    arch = backbone.split(".")[0]
    if arch in DINO_VITS:
        patch, depth, width = DINO_VITS[arch]
        return VitGeometry(
            int(overrides.get("patch_size", patch)), int(overrides.get("depth", depth)),
            int(overrides.get("embed_dim", width)),
        )  # fmt: skip
    return _timm_geometry(backbone, overrides)


def _timm_geometry(backbone: str, overrides: Mapping[str, Any]) -> VitGeometry:
    """timm's own answer for a backbone outside the table (built on the meta device: no memory, no download)."""
    import timm
    import torch

    arch = backbone.split(".")[0]
    if arch not in timm.list_models():
        raise ConfigError(f"unknown timm backbone {backbone!r}; pick one of timm.list_models('*dinov3*')")
    with torch.device("meta"):
        probe: Any = timm.create_model(arch, pretrained=False, num_classes=0, **overrides)
    return VitGeometry(int(probe.patch_embed.patch_size[0]), len(probe.blocks), int(probe.embed_dim))


def check_geometry(config: DinoConfig) -> VitGeometry:
    """Check ``layers`` and ``image_size`` against the backbone architecture (no weights read), so a bad config is
    refused before any weights are read; returns the geometry."""
    geometry = dino_geometry(config.backbone, config.backbone_overrides)
    patch, depth = geometry.patch, geometry.depth
    if config.image_size % patch:
        lower, upper = config.image_size // patch * patch, (config.image_size // patch + 1) * patch
        raise ConfigError(
            f"image_size {config.image_size} is not a multiple of the patch size {patch} of {config.backbone!r}; "
            f"use e.g. {lower or upper} or {upper}"
        )
    beyond = [v for v in config.layers if v > depth]
    if beyond:
        raise ConfigError(
            f"layers {beyond} are beyond the depth {depth} of backbone {config.backbone!r}; use 1-based block "
            f"numbers in 1..{depth}"
        )
    return geometry


def needed_backbone(config: DinoConfig) -> dict[str, dict[str, str]]:
    """The ``backbone`` entry of ``needed_weights`` (empty for random frozen weights)."""
    if config.random_init:
        return {}
    spec = config.backbone_weights or config.backbone
    return {"backbone": {"id": spec, "licence": backbone_licence(config.backbone), "option": "--backbone-weights"}}


def merge_clip_overrides(cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """An open_clip config with ``overrides`` merged in (``vision_cfg`` and ``text_cfg`` key-wise)."""
    merged = copy.deepcopy(dict(cfg))
    for key, value in dict(overrides or {}).items():
        merged[key] = {**merged.get(key, {}), **value} if key in ("vision_cfg", "text_cfg") else value
    return merged


def check_plain_vit(name: str, cfg: Mapping[str, Any]) -> None:
    """Refuse a CLIP config whose vision tower is no class-token ViT (timm trunk, attentional pooling)."""
    vision = cfg["vision_cfg"]
    plain_vit = isinstance(vision.get("layers"), int) and "patch_size" in vision and not vision.get("timm_model_name")
    if not plain_vit or vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok":
        raise ConfigError(f"{name!r} is not a class-token CLIP ViT; use e.g. 'ViT-L-14-336' or 'ViT-B-16'")


def clip_geometry(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The geometry part of open_clip's config of ``name`` with ``overrides`` merged; from :data:`CLIP_VITS`, else
    from open_clip (which imports torch).

    Raises:
        ConfigError: an unknown name, or a tower that is no class-token ViT.
    """
    if name not in CLIP_VITS:
        from medad.models.clip_vision import vision_model_config

        return vision_model_config(name, overrides)
    cfg = merge_clip_overrides(CLIP_VITS[name], overrides)
    check_plain_vit(name, cfg)
    return cfg


def text_geometry(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Like :func:`clip_geometry` for a CLIP whose text tower alone is used (its vision tower may be any kind)."""
    if name not in CLIP_VITS:
        from medad.models.weights import text_model_config

        return text_model_config(name, overrides)
    return merge_clip_overrides(CLIP_VITS[name], overrides)


def check_clip_geometry(model_name: str, image_size: int, layers: Sequence[int], overrides: Mapping[str, Any]) -> None:
    """Refuse an ``image_size`` that is not a multiple of the patch size and ``layers`` beyond the depth (no
    weights read, nothing built)."""
    vision = clip_geometry(model_name, overrides)["vision_cfg"]
    patch, depth = int(vision["patch_size"]), int(vision["layers"])
    if image_size % patch:
        lower, upper = image_size // patch * patch, (image_size // patch + 1) * patch
        raise ConfigError(
            f"image_size {image_size} is not a multiple of the patch size {patch} of {model_name!r}; "
            f"use e.g. {lower or upper} or {upper}"
        )
    beyond = [v for v in layers if v > depth]
    if beyond or any(v < 1 for v in layers):
        raise ConfigError(
            f"layers {list(layers)} must be 1-based block numbers in 1..{depth} of {model_name!r} (e.g. "
            f"{[depth // 4 * k for k in range(1, 5)]})"
        )


class ClipWeightsOptions(Protocol):
    """The config fields that name a CLIP checkpoint."""

    @property
    def clip_model(self) -> str:
        """open_clip config name."""

    @property
    def clip_weights(self) -> str | None:
        """An open_clip tag, ``hf-hub:<repo>`` or a local file; ``None`` with random_init."""

    @property
    def random_init(self) -> bool:
        """Seeded random weights instead of pretrained ones."""


def needed_clip(config: ClipWeightsOptions) -> dict[str, dict[str, str]]:
    """The ``clip`` entry of a CLIP-family model's ``needed_weights``: one CLIP checkpoint for both towers (empty
    with ``random_init``)."""
    if config.random_init:
        return {}
    spec = f"{config.clip_model}/{config.clip_weights}"
    return {"clip": {"id": spec, "licence": clip_licence(config.clip_weights), "option": "--text-weights"}}


def check_pos_interpolation(mode: str) -> None:
    """Refuse an unknown position-embedding interpolation."""
    if mode not in POS_INTERPOLATIONS:
        raise ConfigError(f"pos_interpolation must be one of {', '.join(POS_INTERPOLATIONS)}, got {mode!r}")


def clip_file_options(cfg: dict[str, Any], only_clip: str | None = None) -> dict[str, Any]:
    """A CLIP-family model's weight options: ``text_weights`` (``--text-weights``, a protocol's ``weights.text``)
    names its one CLIP file (``clip_weights``); random weights drop any file. ``only_clip`` (the model's name)
    refuses backbone options: that model reads both towers from its CLIP file."""
    if only_clip is not None and ("backbone" in cfg or "backbone_weights" in cfg):
        raise ConfigError(f"{only_clip} has no separate backbone: give the CLIP file as `weights: {{clip: ...}}`")
    if "text_weights" in cfg:
        cfg.setdefault("clip_weights", cfg.pop("text_weights"))
    if cfg.get("random_init"):
        cfg["clip_weights"] = None
    return cfg
