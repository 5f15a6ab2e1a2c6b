"""The few-shot side of the model contract (medad.models.base): reference features and image scores of a fused map,
for every registered model (tiny presets)."""

from __future__ import annotations

import pytest
import torch

from medad.models.base import InferenceBatch, policy_image_scores, zero_shot_global


@pytest.mark.parametrize("policy", ["global", "blend"])
def test_zero_shot_global_inverts_the_image_policy(policy: str) -> None:
    pixel, global_scores = torch.rand(3, 8, 8), torch.rand(3)
    zero_shot = InferenceBatch(pixel, policy_image_scores(policy, global_scores, pixel))
    torch.testing.assert_close(zero_shot_global(policy, zero_shot), global_scores)
    with pytest.raises(ValueError, match="no image-level score"):
        zero_shot_global("max", zero_shot)
