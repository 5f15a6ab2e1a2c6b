"""The frozen CLIP vision tower as a backbone (OpenAI CLIP ViT-L/14@336, ViT-B/16, ...) for the CLIP-family
methods: its config fields, its geometry check, its weights and the module that taps its blocks.

The tower is open_clip's ``VisionTransformer`` built alone (the text tower is never built) at any input side
that is a multiple of the patch size (518 px for ViT-L/14, as the CLIP-family anomaly detectors run it). The
position embeddings of the weights file are interpolated to the new patch grid once, when the weights are loaded:
``bicubic`` is open_clip's own resize (``open_clip.model.resize_pos_embed``: bicubic, antialiased, what
``open_clip.create_model(..., pretrained=FILE)`` does at another image size), ``bilinear`` is the plain
``F.interpolate(mode="bilinear")`` of the AnomalyCLIP, AA-CLIP and Crane releases.

Weights come from an open_clip pretrained tag (``openai``), ``hf-hub:<repo>`` or a local file: OpenAI's
TorchScript ``.pt`` (its state dict is read, as ``open_clip.load_openai_model`` does), open_clip's
``.safetensors`` or the Hugging Face ``open_clip_pytorch_model.bin`` (full CLIP, ``visual.`` keys, or a vision
tower alone). The sha256 of the file and its licence (MIT for OpenAI's CLIP weights) are recorded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models.backbones import (
    ClipWeightsOptions,
    check_clip_geometry,
    check_plain_vit,
    check_pos_interpolation,
    merge_clip_overrides,
)
from medad.models.base import RGB, Features, patch_grids, rgb
from medad.models.weights import (
    LICENCES,
    build_text_tower,
    check_weights_path,
    is_local_weights,
    open_clip_hub_file,
    seeded,
    state_dict_sha256,
)
from medad.models.weights_files import read_weights
from medad.utils.io import sha256_file

OPENAI_MEAN: RGB = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD: RGB = (0.26862954, 0.26130258, 0.27577711)
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's TorchScript archives


class ClipTowerOptions(ClipWeightsOptions, Protocol):
    """The config fields of a frozen CLIP vision tower but its tapped layers (which each method names its own way):
    the checkpoint's (:class:`~medad.models.backbones.ClipWeightsOptions`) and these."""

    @property
    def clip_overrides(self) -> Mapping[str, Any]:
        """Merged into open_clip's config (``embed_dim``; ``vision_cfg`` key-wise): tiny test models."""

    @property
    def quick_gelu(self) -> bool:
        """QuickGELU in the MLPs (what OpenAI trained with) instead of GELU."""

    @property
    def pos_interpolation(self) -> str:
        """``bicubic`` (open_clip) or ``bilinear`` (the AnomalyCLIP / AA-CLIP / Crane releases)."""

    @property
    def image_size(self) -> int:
        """Input side in pixels."""

    @property
    def init_seed(self) -> int:
        """Seed of the random weights."""


class ClipVisionConfig(ClipTowerOptions, Protocol):
    """The config fields a frozen CLIP vision tower is built from."""

    @property
    def layers(self) -> Sequence[int]:
        """1-based tapped blocks."""


@dataclass(frozen=True)
class ClipVisionFields:
    """A method's config seen as :class:`ClipVisionConfig`: its tower options and the blocks it taps."""

    clip_model: str
    clip_weights: str | None
    clip_overrides: Mapping[str, Any]
    quick_gelu: bool
    pos_interpolation: str
    layers: Sequence[int]
    image_size: int
    random_init: bool
    init_seed: int

    @classmethod
    def of(cls, config: ClipTowerOptions, layers: Sequence[int]) -> ClipVisionFields:
        """The tower fields of ``config`` tapping ``layers``."""
        return cls(
            clip_model=config.clip_model,
            clip_weights=config.clip_weights,
            clip_overrides=config.clip_overrides,
            quick_gelu=config.quick_gelu,
            pos_interpolation=config.pos_interpolation,
            layers=layers,
            image_size=config.image_size,
            random_init=config.random_init,
            init_seed=config.init_seed,
        )


def vision_model_config(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """open_clip's config of ``name`` with ``overrides`` merged (``vision_cfg`` key-wise); only plain CLIP ViTs.

    Raises:
        ConfigError: an unknown name, or a tower that is no class-token ViT (timm trunk, attentional pooling).
    """
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown open_clip model {name!r}; pick one of open_clip.list_models(), e.g. 'ViT-L-14-336'")
    cfg = merge_clip_overrides(cfg, overrides)
    check_plain_vit(name, cfg)
    return cfg


def interpolate_pos_embed(pos: torch.Tensor, grid: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize a ``(1 + g*g, D)`` CLIP position embedding (class token first) to a ``grid`` x ``grid`` patch grid.

    Args:
        pos: The embedding as stored (any float dtype; resized in float32 and returned in float32).
        grid: The new grid side.
        mode: ``bicubic`` (open_clip's resize: antialiased bicubic, ``align_corners=False``) or ``bilinear`` (the
            releases' ``F.interpolate(mode="bilinear")``, ``align_corners=False``, no antialiasing).

    Raises:
        ConfigError: an unknown mode.
        WeightsError: the stored grid is not square.
    """
    check_pos_interpolation(mode)
    old = math.isqrt(pos.shape[0] - 1)
    if old * old != pos.shape[0] - 1:
        raise WeightsError(f"a CLIP position embedding of {pos.shape[0]} rows is no class token plus a square grid")
    if old == grid:
        return pos
    image = pos[1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=(grid, grid), mode=mode, antialias=mode == "bicubic", align_corners=False)
    image = image.permute(0, 2, 3, 1).reshape(grid * grid, -1)
    return torch.cat([pos[:1].float(), image], dim=0)


def vision_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision-tower tensors of a checkpoint's state dict, under the tower's own key names.

    A full CLIP (OpenAI's layout, open_clip's files: ``visual.*``) gives its ``visual.`` tensors; a file without
    ``visual.`` keys is taken as a vision tower alone. ``module.`` prefixes and OpenAI's metadata are dropped.
    """
    plain = {k.removeprefix("module."): v for k, v in state.items() if k.removeprefix("module.") not in _METADATA_KEYS}
    visual = {k[len("visual.") :]: v for k, v in plain.items() if k.startswith("visual.")}
    return visual or plain


def _check_fit(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], file: Path, model_name: str
) -> None:
    """Refuse a file whose tensors are not the tower's: a wrong shape (position embeddings only need the tower's
    width: their grid is interpolated), then missing or extra keys."""
    fix = f"pass a CLIP checkpoint of {model_name!r} (or set clip_model to the file's architecture)"
    named = f"CLIP vision weights file {str(file)!r}"
    wrong = [
        f"{key} is {tuple(state[key].shape)}, expected {tuple(want.shape)}"
        for key, want in expected.items()
        if key in state and not _shape_fits(key, tuple(state[key].shape), tuple(want.shape))
    ]
    if wrong:  # shapes first: a wider or narrower model is named by its widths, not by its extra blocks
        raise WeightsError(f"{named} does not fit {model_name!r}: {'; '.join(wrong[:3])}; {fix}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(
            f"{named} lacks {len(missing)} tensors of the {model_name!r} vision tower (e.g. "
            f"{', '.join(missing[:3])}); {fix}"
        )
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightsError(
            f"{named} has {len(extra)} vision tensors the {model_name!r} tower does not (e.g. {', '.join(extra[:3])}; "
            f"a deeper or other model); {fix}"
        )


def _shape_fits(key: str, have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Position embeddings only need the tower's width (their grid is interpolated); the rest, the exact shape."""
    return have[1:] == want[1:] if key == "positional_embedding" else have == want


def clip_licence(spec: str, digest: str | None) -> str:
    """MIT for OpenAI's CLIP weights (the ``openai`` tag, a ``.openai`` hub repo, or a file whose sha256 is one of
    OpenAI's released ``.pt`` files, as open_clip's download URLs name them); otherwise the source's own."""
    import open_clip

    if spec == "openai" or (spec.startswith("hf-hub:") and spec.rstrip("/").endswith(".openai")):
        return LICENCES["openai"]
    released = {
        str(cfg.get("url", "")).split("/")[-2]
        for name, tag in open_clip.list_pretrained()
        if tag == "openai" and (cfg := open_clip.get_pretrained_cfg(name, tag)) and cfg.get("url")
    }
    return LICENCES["openai"] if digest in released else LICENCES["unknown"]


def _clip_vision_hint(model_name: str, tag: str) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) if not tag.startswith("hf-hub:") else {}
    where = [f"the file {Path(str(cfg['url'])).name} ({cfg['url']})"] if cfg.get("url") else []
    if cfg.get("hf_hub"):
        where.append(f"the Hugging Face repo {str(cfg['hf_hub']).rstrip('/')} (open_clip_pytorch_model.bin)")
    return (
        f"the CLIP weights {model_name!r}/{tag!r} could not be downloaded (offline or missing); with network access "
        f"run `python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{tag}')\"` once to "
        f"fill the cache, or download {' or '.join(where) or 'the checkpoint'} and pass it as "
        "clip_weights='/path/to/file' (in a protocol: weights: {clip: {file: ...}})"
    )


def build_clip_vision(
    model_name: str,
    weights: str | os.PathLike[str] | None = "openai",
    *,
    image_size: int,
    quick_gelu: bool = True,
    pos_interpolation: str = "bicubic",
    overrides: Mapping[str, Any] | None = None,
    random_init: bool = False,
    init_seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Build open_clip's vision tower of ``model_name`` at ``image_size`` and load its weights.

    Args:
        model_name: open_clip config name, e.g. ``ViT-L-14-336``.
        weights: An open_clip pretrained tag (``openai``), ``hf-hub:<repo>`` or a local file (see the module doc).
        image_size: Input side in pixels (a multiple of the patch size); the position embeddings are interpolated.
        quick_gelu: QuickGELU (what OpenAI trained with) instead of GELU.
        pos_interpolation: ``bicubic`` or ``bilinear`` (:func:`interpolate_pos_embed`).
        overrides: Merged into open_clip's config (tiny test models).
        random_init: Seeded random weights; ``weights`` must then be None.
        init_seed: Seed of the random weights.

    Returns:
        ``(tower, info)``: open_clip's ``VisionTransformer`` (``Any``: open_clip is untyped) and its info with
        ``id``, ``source`` (``hub``/``file``/``random``), ``file``, ``sha256``, ``licence``, ``activation``,
        ``pos_interpolation`` and ``native_grid`` (the patch grid the weights were trained at).

    Raises:
        ConfigError: an unknown model or tag, a bad size, or both ``weights`` and ``random_init``.
        WeightsError: missing, offline, unreadable or mismatching weights.
    """
    from open_clip.model import _build_vision_tower

    if random_init and weights is not None:
        raise ConfigError("CLIP vision: pass either clip_weights or random_init=True, not both")
    check_pos_interpolation(pos_interpolation)
    check_clip_geometry(model_name, image_size, (), overrides or {})
    cfg = vision_model_config(model_name, overrides)
    native = int(cfg["vision_cfg"]["image_size"]) // int(cfg["vision_cfg"]["patch_size"])
    vision_cfg = {**cfg["vision_cfg"], "image_size": image_size}
    info: dict[str, Any] = {
        "id": model_name,
        "activation": "quickgelu" if quick_gelu else "gelu",
        "pos_interpolation": pos_interpolation,
        "native_grid": native,
        "file": None,
        "sha256": None,
    }

    def build() -> Any:
        return _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu)

    if random_init:
        tower = seeded(build, init_seed)
        info.update(source="random", licence=LICENCES["random"], sha256=state_dict_sha256(tower))
        return tower.eval().requires_grad_(False), info
    if weights is None:
        raise ConfigError("clip_weights is None: pass an open_clip tag such as 'openai', a local file, or random_init")
    spec = str(weights)
    if is_local_weights(spec):
        file, source, weights_id = check_weights_path(spec, "CLIP vision"), "file", model_name
    else:
        hub = open_clip_hub_file(model_name, spec, _clip_vision_hint(model_name, spec))
        file, source, weights_id = hub, "hub", f"{model_name}/{spec}"
    fmt, stored = read_weights(file)
    state = vision_state(stored)
    tower = build()
    expected = tower.state_dict()
    _check_fit(state, expected, file, model_name)
    info["native_grid"] = math.isqrt(state["positional_embedding"].shape[0] - 1)
    grid = int(tower.grid_size[0])
    state["positional_embedding"] = interpolate_pos_embed(state["positional_embedding"], grid, pos_interpolation)
    tower.load_state_dict(state)  # copies into the tower's float32 tensors (OpenAI's .pt files hold float16)
    digest = sha256_file(file)
    info.update(id=weights_id, source=source, file=str(file), sha256=digest, format=fmt)
    info["licence"] = clip_licence(spec, digest)
    return tower.eval().requires_grad_(False), info


def clip_normalisation(model_name: str, weights: str | None) -> tuple[RGB, RGB]:
    """The mean and std of the tag's weights (open_clip's pretrained config), else OpenAI's."""
    import open_clip

    tag = str(weights) if weights is not None and not is_local_weights(weights) else "openai"
    cfg = open_clip.get_pretrained_cfg(model_name, tag) if not tag.startswith("hf-hub:") else {}
    return rgb(cfg.get("mean", OPENAI_MEAN)), rgb(cfg.get("std", OPENAI_STD))


def build_frozen_clip_text(config: ClipTowerOptions) -> tuple[nn.Module, dict[str, Any], Any]:
    """The frozen text tower of a CLIP-family method's one CLIP file (with random weights seeded ``init_seed + 1``,
    the vision tower taking ``init_seed``), its weights' record and open_clip's tokenizer for it."""
    import open_clip

    text, info = build_text_tower(
        config.clip_model,
        None if config.random_init else config.clip_weights,
        quick_gelu=config.quick_gelu,
        random_init=config.random_init,
        overrides=config.clip_overrides,
        init_seed=config.init_seed + 1,
    )
    return text.eval().requires_grad_(False), info, open_clip.get_tokenizer(config.clip_model)


def build_frozen_clip_vision(config: ClipVisionConfig) -> tuple[Any, dict[str, Any], RGB, RGB]:
    """Build the frozen CLIP vision tower of a config (see :class:`ClipVisionConfig`).

    Returns:
        The open_clip ``VisionTransformer``, its weights info (:func:`build_clip_vision`) and its normalisation
        mean and std.
    """
    check_clip_geometry(config.clip_model, config.image_size, config.layers, config.clip_overrides)
    tower, info = build_clip_vision(
        config.clip_model,
        None if config.random_init else config.clip_weights,
        image_size=config.image_size,
        quick_gelu=config.quick_gelu,
        pos_interpolation=config.pos_interpolation,
        overrides=config.clip_overrides,
        random_init=config.random_init,
        init_seed=config.init_seed,
    )
    mean, std = clip_normalisation(config.clip_model, None if config.random_init else config.clip_weights)
    return tower, info, mean, std


class ClipVisionBackbone(nn.Module):
    """A frozen open_clip vision tower (``.model``, always in eval mode) tapped at some blocks.

    Its ``forward`` returns a features dict of tensors, so a trainable model whose vision side is frozen returns
    it from ``forward_features`` and the engine caches it on disk like AD-DINOv3's (:mod:`medad.engine.features`).

    Args:
        model: open_clip's ``VisionTransformer`` (:func:`build_clip_vision`).
        layers: 1-based block numbers, e.g. ``(6, 12, 18, 24)`` for ViT-L/14.
    """

    model: Any  # open_clip's VisionTransformer

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.indices = [int(v) - 1 for v in layers]
        depth = len(self.model.transformer.resblocks)
        if not self.indices or any(not 0 <= i < depth for i in self.indices):
            raise ConfigError(f"layers {list(layers)} must be 1-based block numbers in 1..{depth}")

    def train(self, mode: bool = True) -> ClipVisionBackbone:
        """Keep the frozen tower in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    @property
    def grid(self) -> int:
        """Side of the patch grid at the tower's input size."""
        return int(self.model.grid_size[0])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        """Run all tapped blocks in one batched forward (open_clip's ``forward_intermediates``).

        Args:
            images: ``(B, 3, S, S)`` normalised images.

        Returns:
            ``patch_tokens`` ``(B, L, N, D)`` and ``cls_tokens`` ``(B, L, D)``: the residual stream after each
            tapped block (before ``ln_post``; :meth:`project` maps them to the joint space); ``embedding``
            ``(B, E)``: the final projected image embedding (``ln_post`` of the last CLS token, times ``proj``).
        """
        side = self.grid * int(self.model.patch_size[0])
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, side, side):
            raise ConfigError(
                f"the CLIP vision tower takes (B, 3, {side}, {side}) images (its position embeddings were sized for "
                f"{side} px), got {tuple(images.shape)}; resize the images or build the tower at their size"
            )
        out = self.model.forward_intermediates(images, indices=self.indices, output_fmt="NLC", output_extra_tokens=True)
        return {
            "patch_tokens": torch.stack(out["image_intermediates"], dim=1),
            "cls_tokens": torch.stack([prefix[:, 0] for prefix in out["image_intermediates_prefix"]], dim=1),
            "embedding": out["image_features"],
        }

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map residual-stream tokens ``(..., D)`` to the joint image-text space: ``ln_post`` then ``proj``
        (what CLIP applies to its CLS token; the CLIP-family detectors apply it to patch tokens too)."""
        tokens = self.model.ln_post(tokens)
        return tokens @ self.model.proj if self.model.proj is not None else tokens


@torch.no_grad()
def frozen_patch_grids(model: Any, images: torch.Tensor, layers: Sequence[int]) -> Features:
    """The few-shot memory features of a CLIP-family method: the frozen tower's own residual-stream patch tokens at
    the tapped blocks (no prompts, adapters or V-V / E-Attn / D-Attn paths), ``{"layer<l>": (B, g, g, D)}``.

    These are the raw multi-layer tokens AF-CLIP's memory bank stores (``clip/model.py``), as APRIL-GAN's and
    AnomalyCLIP+'s few-shot memories do: the frozen tokens match normal tissue to normal tissue, while the adapted
    ones are trained to align with text, not with each other.
    """
    indices = [int(v) - 1 for v in layers]
    out = model.forward_intermediates(
        images, indices=indices, stop_early=True, intermediates_only=True, output_fmt="NLC"
    )
    return patch_grids(torch.stack(out["image_intermediates"], dim=1), layers)

