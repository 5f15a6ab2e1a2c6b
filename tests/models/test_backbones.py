"""The geometry tables of :mod:`medad.models.backbones` (what ``medad validate`` checks model options against
without torch) say what timm and open_clip build, and checking a config with them gives the same answer as
asking timm / open_clip."""

from __future__ import annotations

from typing import Any

import open_clip
import pytest
import timm
import torch

from medad.errors import ConfigError
from medad.models import backbones, check_model_config, list_models, model_class
from medad.models.backbones import CLIP_VITS, DINO_VITS, dino_geometry
from medad.models.clip_vision import vision_model_config
from medad.models.config import ModelConfig


@pytest.mark.parametrize("arch", sorted(DINO_VITS))
def test_every_dino_row_is_what_timm_builds(arch: str) -> None:
    with torch.device("meta"):
        model: Any = timm.create_model(arch, pretrained=False, num_classes=0)
    assert DINO_VITS[arch] == (model.patch_embed.patch_size[0], len(model.blocks), model.embed_dim)


def test_overrides_change_the_geometry_as_they_change_timms_model() -> None:
    overrides = {"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 8, "reg_tokens": 4}
    with torch.device("meta"):
        model: Any = timm.create_model("vit_base_patch14_reg4_dinov2", pretrained=False, num_classes=0, **overrides)
    found = dino_geometry("vit_base_patch14_reg4_dinov2.lvd142m", overrides)
    assert (found.patch, found.depth, found.width) == (8, 1, 32) == (
        model.patch_embed.patch_size[0], len(model.blocks), model.embed_dim
    )


@pytest.mark.parametrize("name", sorted(CLIP_VITS))
def test_every_clip_row_is_open_clips_config(name: str) -> None:
    cfg = open_clip.get_model_config(name)
    row = CLIP_VITS[name]
    assert row["embed_dim"] == cfg["embed_dim"]
    for part in ("vision_cfg", "text_cfg"):
        assert row[part] == {key: cfg[part][key] for key in row[part]}, part
    vision_model_config(name)  # a class-token ViT, as the table's rows are taken to be


BAD_OPTIONS = [
    {"image_size": 100},  # not a multiple of the patch size
    {"layers": (99,)},
    {"levels": (99,)},
    {"image_size": 28, "k_clusters": 5000},
    {"dpam_layers": 99},
    {"text_depth": 99},
    {"prompt_depth": 99},
    {"surgery_layers": 99},
    {"text_adapt_until": 99},
    {"image_adapt_until": 99},
    {"layers": (1,)},  # Crane: before its E-Attn blocks
]


def _answers(name: str) -> list[str]:
    """What check_model_config says of ``name`` with each option set of BAD_OPTIONS it takes (``ok`` if none)."""
    answers = []
    for options in BAD_OPTIONS:
        if not set(options) <= set(model_class(name).config_class.model_fields):
            continue
        try:
            check_model_config(name, **options)
            answers.append("ok")
        except ConfigError as exc:
            answers.append(str(exc))
    return answers


@pytest.mark.parametrize("name", list_models())
def test_checks_from_the_tables_say_what_timm_and_open_clip_say(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every registered model, its defaults and a set of bad options: the same verdicts and messages with the
    tables as with them emptied (timm's meta-device model and open_clip's config answer)."""
    with_tables = [*_answers(name), "ok" if check_model_config(name) else "?"]
    monkeypatch.setattr(backbones, "DINO_VITS", {})
    monkeypatch.setattr(backbones, "CLIP_VITS", {})
    without = [*_answers(name), "ok" if check_model_config(name) else "?"]
    assert with_tables == without
    if model_class(name).config_class.check_architecture is not ModelConfig.check_architecture:
        assert any(answer != "ok" for answer in with_tables)  # the bad options were refused (WinCLIP: at build)
