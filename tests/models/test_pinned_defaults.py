"""The released method's settings, pinned: a change to any of them must be deliberate (method notes §1-§5)."""

from __future__ import annotations

import timm

from medad.models import ADDINOv3Config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_model_defaults_are_the_released_ones() -> None:
    config = ADDINOv3Config()
    assert config.layers == (6, 12, 18, 24)
    assert config.image_size == 512
    assert config.smoothing_sigma == 0.0
    assert config.backbone == "vit_large_patch16_dinov3.lvd1689m"
    assert config.text_model == "ViT-L-14-336" and config.text_weights == "openai"
    assert config.adapter_dim == 768
    assert config.compat == "clean"


def test_reference_mode_uses_gelu_and_clean_mode_the_trained_activation() -> None:
    assert ADDINOv3Config.from_kwargs(compat="reference").resolved_quick_gelu() is False
    assert ADDINOv3Config.from_kwargs(compat="clean").resolved_quick_gelu() is True  # OpenAI trained with QuickGELU


def test_normalisation_is_imagenet_mean_and_std(tiny_clean) -> None:
    cfg = timm.models.get_pretrained_cfg("vit_large_patch16_dinov3.lvd1689m")
    assert tuple(cfg.mean) == IMAGENET_MEAN and tuple(cfg.std) == IMAGENET_STD
    assert tuple(tiny_clean.mean) == IMAGENET_MEAN and tuple(tiny_clean.std) == IMAGENET_STD
