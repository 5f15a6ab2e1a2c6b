"""Weights resolution: missing / offline errors, and real-sized architectures from local files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import open_clip
import pytest
import timm
import torch
from open_clip.model import _build_text_tower
from safetensors.torch import save_file
from torch import nn

from medad.errors import WeightsError
from medad.models import create_model
from medad.models.weights import build_backbone, build_text_tower, text_model_config
from medad.utils.io import sha256_file


def _fill(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values in every float tensor (a tiled random block: cheap for 300 M parameters)."""
    block = torch.randn(1 << 16, generator=torch.Generator().manual_seed(seed)) * 0.02
    state = {}
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point():
            n = tensor.numel()
            tensor = block.repeat(n // block.numel() + 1)[:n].reshape(tensor.shape).clone()
        state[name] = tensor.contiguous()
    return state


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real-shaped random weight files: DINOv3 ViT-L/16 and a full-CLIP-style ViT-L-14-336 text tower."""
    folder = tmp_path_factory.mktemp("weights")
    with torch.device("meta"):
        vit = timm.create_model("vit_large_patch16_dinov3", pretrained=False, num_classes=0)
    vit_state = _fill(vit.to_empty(device="cpu"), 0)
    save_file(vit_state, str(folder / "dinov3.safetensors"))
    cfg = text_model_config("ViT-L-14-336")
    with torch.device("meta"):
        tower = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"])
    text_state = _fill(tower.to_empty(device="cpu"), 1)
    text_state["visual.proj"] = torch.zeros(2, 2)  # a full CLIP file also holds vision weights: ignored
    text_state["logit_scale"] = torch.tensor(4.6)
    torch.save(text_state, folder / "clip.pth")
    return {
        "backbone": folder / "dinov3.safetensors",
        "text": folder / "clip.pth",
        "vit_probe": vit_state["blocks.23.mlp.fc2.weight"],
        "text_probe": text_state["transformer.resblocks.11.mlp.c_fc.weight"],
    }


@pytest.mark.slow
def test_real_sized_reference_model_from_local_files(real_files: dict[str, Any]) -> None:
    model = create_model(
        "ad_dinov3",
        backbone_weights=str(real_files["backbone"]),
        text_weights=str(real_files["text"]),
        image_size=64,
        compat="reference",
        text_disk_cache=False,
    )
    card = model.card()
    assert card["random_weights"] is True and card["random_parts"] == ["adapters"]  # real frozen, no checkpoint
    assert card["backbone"]["sha256"] == sha256_file(real_files["backbone"])
    assert card["text"]["sha256"] == sha256_file(real_files["text"])
    assert card["backbone"]["licence"].startswith("DINOv3 License")
    assert torch.equal(model.backbone.model.blocks[23].mlp.fc2.weight, real_files["vit_probe"])
    tower = model.text_encoder.tower
    assert torch.equal(tower.transformer.resblocks[11].mlp.c_fc.weight, real_files["text_probe"])
    assert type(tower.transformer.resblocks[0].mlp.gelu) is nn.GELU  # the release's GELU
    assert sum(p.numel() for p in model.trainable_modules().parameters()) == 14_942_208  # fc2 kept registered
    assert not any("visual" in n for n, _ in model.named_parameters())
    feats = model.forward_features(torch.zeros(1, 3, 64, 64))
    assert feats["patch_tokens"].shape == (1, 4, 16, 1024) and feats["cls_tokens"].shape == (1, 4, 1024)


@pytest.mark.slow
def test_real_sized_clean_model_from_local_files(real_files: dict[str, Any]) -> None:
    model = create_model(
        "ad_dinov3",
        backbone_weights=str(real_files["backbone"]),
        text_weights=str(real_files["text"]),
        image_size=64,
        compat="clean",
        text_disk_cache=False,
    )
    card = model.card()
    assert card["random_parts"] == ["adapters"] and card["config"]["compat"] == "clean"
    assert card["backbone"]["sha256"] == sha256_file(real_files["backbone"])
    assert card["text"]["sha256"] == sha256_file(real_files["text"]) and card["text"]["activation"] == "quickgelu"
    assert torch.equal(model.backbone.model.blocks[23].mlp.fc2.weight, real_files["vit_probe"])
    tower = model.text_encoder.tower
    assert isinstance(tower.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert torch.equal(tower.transformer.resblocks[11].mlp.c_fc.weight, real_files["text_probe"])
    assert sum(p.numel() for p in model.trainable_modules().parameters()) == 7_471_104  # fc1 only
    assert tower(torch.zeros(1, 77, dtype=torch.long)).shape == (1, 768)
    feats = model.forward_features(torch.zeros(1, 3, 64, 64))
    assert feats["patch_tokens"].shape == (1, 4, 16, 1024) and feats["cls_tokens"].shape == (1, 4, 1024)


def test_missing_local_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"backbone weights file .*nope.safetensors' does not exist"):
        build_backbone("vit_small_patch16_dinov3", tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match=r"text weights file .*does not exist"):
        build_text_tower("ViT-B-32", str(tmp_path / "nope.pth"))


def test_offline_hub_ends_in_one_clear_error() -> None:
    with pytest.raises(WeightsError) as gated:
        build_backbone("vit_small_patch16_dinov3.lvd1689m", overrides={"depth": 1, "embed_dim": 64, "num_heads": 2})
    assert re.search(r"gated.*facebook/dinov3-vitl16-pretrain-lvd1689m.*`hf auth login`", str(gated.value))
    assert "--backbone-weights /path/to/file.safetensors on the command line" in str(gated.value)
    assert "backbone_weights='/path/to/file.safetensors' in Python" in str(gated.value)
    assert "huggingface-cli" not in str(gated.value)  # the installed huggingface_hub's CLI is `hf`
    with pytest.raises(WeightsError, match=r"could not be downloaded.*--text-weights /path/to/file.*text_weights="):
        build_text_tower("ViT-B-32", "openai", overrides={"embed_dim": 32, "text_cfg": {"width": 32, "layers": 1}})


def test_wrong_architecture_file(tmp_path: Path) -> None:
    small = timm.create_model(
        "vit_small_patch16_dinov3", pretrained=False, num_classes=0, depth=1, embed_dim=64, num_heads=2
    )
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(tmp_path / "small.safetensors"))
    with pytest.raises(WeightsError, match=r"does not fit backbone 'vit_small_patch16_dinov3' with depth 12, width"):
        build_backbone("vit_small_patch16_dinov3", tmp_path / "small.safetensors", img_size=32)
    torch.save({"token_embedding.weight": torch.zeros(3, 3)}, tmp_path / "text.pth")
    with pytest.raises(WeightsError, match=r"lacks .* tensors"):
        build_text_tower("ViT-B-32", str(tmp_path / "text.pth"))
