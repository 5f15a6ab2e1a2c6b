"""ADDINOv3.explain: per-layer CMCL maps, the AACM map and the final map, consistent with forward()."""

from __future__ import annotations

import pytest
import torch

from medad.errors import ConfigError
from medad.models import ADDINOv3, create_model


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_explain_matches_forward_in_both_modes(compat: str, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = create_model("ad_dinov3_tiny", compat=compat, smoothing_sigma=1.5)
    words = ["skin lesion", "polyp"]
    model.eval()
    out = model.explain(images, words)
    assert not model.training  # mode untouched
    n_layers, size = len(model.layers), model.image_size
    assert out["layers"] == model.layers
    assert out["cmcl_layers"].shape == (2, n_layers, size, size)
    assert out["aacm_layers"].shape == (2, n_layers, size, size)
    for key in ("cmcl", "aacm", "pixel_scores"):
        assert out[key].shape == (2, size, size)
        assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.0
    assert out["global_scores"].shape == out["image_scores"].shape == (2,)
    assert not out["pixel_scores"].requires_grad

    with torch.no_grad():
        evaluated = model(images, words)
        model.train()
        trained = model(images, words)
        model.eval()
    torch.testing.assert_close(out["pixel_scores"], evaluated.pixel_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["image_scores"], evaluated.image_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["cmcl"], trained.seg_probs[:, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["aacm"], trained.aacm_probs[:, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["cmcl_layers"].mean(dim=1), out["cmcl"])
    torch.testing.assert_close(
        out["global_scores"], torch.softmax(trained.global_logits, dim=-1)[:, 1], atol=1e-6, rtol=0
    )


def test_explain_keeps_training_mode_and_checks_words(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    tiny_clean.train()
    try:
        tiny_clean.explain(images, ["skin lesion", "polyp"])
        assert tiny_clean.training
        with pytest.raises(ConfigError, match="one word per image"):
            tiny_clean.explain(images, ["skin lesion"])
    finally:
        tiny_clean.eval()
