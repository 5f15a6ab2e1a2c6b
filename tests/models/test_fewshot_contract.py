"""The few-shot side of the model contract (medad.models.base): reference features and image scores of a fused map,
for every registered model (tiny presets)."""

from __future__ import annotations

import pytest
import torch

from medad.models import create_model, list_models
from medad.models.base import InferenceBatch, policy_image_scores, zero_shot_global
from medad.models.patch_memory import PatchMemory


@pytest.mark.parametrize("policy", ["global", "blend"])
def test_zero_shot_global_inverts_the_image_policy(policy: str) -> None:
    pixel, global_scores = torch.rand(3, 8, 8), torch.rand(3)
    zero_shot = InferenceBatch(pixel, policy_image_scores(policy, global_scores, pixel))
    torch.testing.assert_close(zero_shot_global(policy, zero_shot), global_scores)
    with pytest.raises(ValueError, match="no image-level score"):
        zero_shot_global("max", zero_shot)


TINY = {
    "ad_dinov3_tiny": 112,
    "adaclip_tiny": 64,
    "anomalyclip_tiny": 64,
    "anomalyclip_paper_tiny": 64,
    "crane_tiny": 64,
    "crane_plus_tiny": 64,
    "aa_clip_tiny": 64,
    "aa_clip_dinov3_tiny": 112,
    "winclip_tiny": 64,
    "dinov3_mutual_tiny": 64,
    "anomalydino_tiny": 64,
    "anomalydino_dinov3_tiny": 64,
}


def _tiny_name(name: str) -> str:
    return name if name.endswith("_tiny") else f"{name}_tiny"


def test_every_registered_model_has_a_tiny_preset_here() -> None:
    assert {_tiny_name(n) for n in list_models()} <= set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_reference_features_are_per_layer_grids_deterministic_and_image_dependent(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = TINY[name]
    assert model.image_size == size and 0 < model.fewshot_weight <= 1
    assert model.needs_references is name.startswith("anomalydino")
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    feats = model.reference_features(images, ["x", "x"])
    again = model.reference_features(images, ["x", "x"])
    swapped = model.reference_features(images.flip(0), ["x", "x"])
    assert feats and all(t.dim() == 4 and t.shape[0] == 2 and t.is_floating_point() for t in feats.values())
    assert not any(t.requires_grad for t in feats.values())
    for key, tensor in feats.items():
        torch.testing.assert_close(again[key], tensor)
        torch.testing.assert_close(swapped[key], tensor.flip(0))
        assert not torch.allclose(tensor[0], tensor[1])
    memory = PatchMemory(radii=(1, 3))
    memory.add(feats)
    scores = memory.score(model.reference_features(images[:1], ["x"]))
    assert scores.shape[0] == 1 and float(scores.max()) < 1e-4  # an image in the bank matches itself


@pytest.mark.parametrize("name", ["ad_dinov3_tiny", "winclip_tiny", "dinov3_mutual_tiny"])
def test_fewshot_image_scores_follow_the_model_policy(name: str) -> None:
    model = create_model(name).eval()
    size = model.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        zero_shot = model(images, ["x", "x"])
    fused = torch.rand(2, size, size, generator=torch.Generator().manual_seed(5))
    got = model.fewshot_image_scores(fused, zero_shot)
    assert got.shape == (2,)
    fused_max = fused.flatten(1).amax(dim=1)
    torch.testing.assert_close(model.fewshot_image_scores(fused, None), fused_max)
    if model.config.image_score == "max":
        torch.testing.assert_close(got, fused_max)
    else:
        torch.testing.assert_close(got, 0.5 * (zero_shot_global(model.config.image_score, zero_shot) + fused_max))
