"""Weights files laid out like the released ones, filled with random values (for the loading tests).

How the layouts were made faithful (see docs/models.md): the two JSON tables in ``tests/models/data`` list every
key and shape of Meta's DINOv3 ViT-L/16 and of OpenAI's CLIP ViT-L/14@336, read off the state dicts of Meta's own
``dinov3_vitl16`` (facebookresearch/dinov3, ``hub/backbones.py``) and OpenAI's own ``CLIP`` class (openai/CLIP,
``clip/model.py``, ViT-L/14@336 arguments), both instantiated on the meta device; no code of either is used here.
The tests check that the writers below produce exactly those tables at full size, then use small same-layout
configurations for the numerical checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from open_clip.model import CLIP
from torch import nn

DATA = Path(__file__).parent / "data"


def layout(name: str) -> dict[str, tuple[int, ...]]:
    """A stored key -> shape table (``dinov3_vitl16_meta_layout`` or ``openai_clip_vitl14_336_layout``)."""
    return {k: tuple(v) for k, v in json.loads((DATA / f"{name}.json").read_text()).items()}


def meta_dinov3_state_dict(model: nn.Module, rope_base: float = 100.0) -> dict[str, torch.Tensor]:
    """The state dict of a timm DINOv3 ViT under Meta's release names (the inverse of timm's DINOv3 filter).

    Meta's release keeps ``storage_tokens`` (timm's ``reg_token``), ``ls1.gamma`` / ``ls2.gamma`` (timm's
    ``gamma_1`` / ``gamma_2``), one ``qkv.bias`` per block with its ``bias_mask`` (1 for q and v, 0 for k; the
    distilled ViT-S/B/L files hold zero biases, timm's ``_qkvb`` variants non-zero q and v biases), a
    ``mask_token`` and the RoPE ``periods`` buffer (``base ** (2 i / (D_head / 2))``).
    """
    out: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    dim = state["cls_token"].shape[-1]
    for key, value in state.items():
        if key.endswith(("attn.q_bias", "attn.v_bias")):
            continue
        key = key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[key] = value.clone()
        if key == "storage_tokens":
            out["mask_token"] = torch.zeros(1, dim, dtype=value.dtype, device=value.device)
            head_dim = dim // model.blocks[0].attn.num_heads
            periods = rope_base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
            out["rope_embed.periods"] = periods.to(value.device)
        if key.endswith("attn.qkv.weight"):
            prefix = key[: -len("weight")]
            q_bias = state.get(key.replace("qkv.weight", "q_bias"))
            v_bias = state.get(key.replace("qkv.weight", "v_bias"))
            zeros = torch.zeros(dim, dtype=value.dtype, device=value.device)
            out[prefix + "bias"] = torch.cat(
                [zeros if q_bias is None else q_bias, zeros, zeros if v_bias is None else v_bias]
            )
            mask = torch.ones(3 * dim, dtype=value.dtype, device=value.device)
            mask[dim : 2 * dim] = 0
            out[prefix + "bias_mask"] = mask
    order = ["cls_token", "storage_tokens", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    head = {k: out.pop(k) for k in order}
    periods = {"rope_embed.periods": out.pop("rope_embed.periods")}
    return {**head, **periods, **out}


def openai_layout_clip(embed_dim: int, vision_cfg: Mapping[str, Any], text_cfg: Mapping[str, Any]) -> nn.Module:
    """An open_clip CLIP (QuickGELU, as OpenAI trained) whose state dict is keyed like OpenAI's TorchScript archive.

    open_clip's CLIP class uses OpenAI's key names; OpenAI's archives also carry ``input_resolution``,
    ``context_length`` and ``vocab_size`` (both OpenAI's ``build_model`` and open_clip's
    ``build_model_from_openai_state_dict`` delete them before loading), added here as integer buffers, and hold no
    attention-mask buffer (the mask becomes a plain attribute).
    """
    model = CLIP(embed_dim, dict(vision_cfg), dict(text_cfg), quick_gelu=True).eval()
    del model.context_length, model.vocab_size
    mask = model.attn_mask
    del model.attn_mask
    model.attn_mask = mask
    size = model.visual.image_size
    facts = {
        "input_resolution": size[0] if isinstance(size, tuple) else size,
        "context_length": model.positional_embedding.shape[0],
        "vocab_size": model.token_embedding.weight.shape[0],
    }
    for name, value in facts.items():
        model.register_buffer(name, torch.tensor(int(value)))
    return model


def save_openai_torchscript(model: nn.Module, path: Path, tokens: torch.Tensor) -> Path:
    """Trace ``encode_text`` with ``torch.jit`` and save the archive in fp16, as OpenAI's ``.pt`` files are."""
    traced = torch.jit.trace_module(copy.deepcopy(model), {"encode_text": tokens}).half()
    traced.save(str(path))
    return path
