"""``reference`` mode computes the head in the release's operation order, so its maps and logits equal the
release's bit for bit: ``100 * p @ T`` scaled before the product, two-channel maps upsampled then soft-maxed,
layer means as ``torch.mean(torch.stack(...), dim=0)``. The oracle below is the release's ``get_anomaly_map``
after its text branch, written out with the same tensor operations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medad.models import ADDINOv3


def release_head(model: ADDINOv3, features: dict[str, torch.Tensor], text: torch.Tensor, size: int):
    """The release's visual branch (``tools/utils.py``) on medad's tokens and text matrix."""
    patch_tokens, cls_tokens = features["patch_tokens"].float(), features["cls_tokens"].float()
    side = math.isqrt(patch_tokens.shape[2])
    maps, aacms, scores = [], [], []
    for i in range(patch_tokens.shape[1]):
        cls = model.cls_adapters[i](cls_tokens[:, i].unsqueeze(1))
        cls = cls / cls.norm(dim=-1, keepdim=True)
        patch = model.patch_adapters[i](patch_tokens[:, i])
        patch = patch / patch.norm(dim=-1, keepdim=True)
        cross = 100 * patch @ text
        cross = F.interpolate(cross.permute(0, 2, 1).view(-1, 2, side, side), size=size, mode="bilinear",
                              align_corners=True)  # fmt: skip
        maps.append(torch.softmax(cross, dim=1))
        aware = 10 * patch @ cls.squeeze(1).unsqueeze(-1)
        aware = F.interpolate(aware.permute(0, 2, 1).view(-1, 1, side, side), size=size, mode="bilinear",
                              align_corners=True)  # fmt: skip
        aware = torch.sigmoid(aware)
        aacms.append(torch.cat([1 - aware, aware], dim=1))
        scores.append(100 * cls @ text)
    mean = [torch.mean(torch.stack(x, dim=0), dim=0) for x in (maps, aacms, scores)]
    return mean[0], mean[1], mean[2].squeeze(1)


def test_reference_head_equals_the_release_bit_for_bit(tiny_reference: ADDINOv3, images: torch.Tensor) -> None:
    words = ["bottle", "skin lesion"]
    with torch.no_grad():
        features = tiny_reference.forward_features(images)
        text = tiny_reference._head_text(words, features["patch_tokens"])
        cmcl, aacm, logits = release_head(tiny_reference, features, text, tiny_reference.image_size)
        trained = tiny_reference.train().forward_head(features, words)
        evaluated = tiny_reference.eval().forward_head(features, words)
    assert torch.equal(trained.seg_probs, cmcl) and torch.equal(trained.aacm_probs, aacm)
    assert torch.equal(trained.global_logits, logits)
    assert torch.equal(evaluated.pixel_scores, cmcl[:, 1].clamp(0.0, 1.0))
    assert torch.equal(tiny_reference.global_logits(features, words), logits)


def test_clean_head_stays_within_rounding_of_the_release_order(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    words = ["bottle", "skin lesion"]
    with torch.no_grad():
        features = tiny_clean.forward_features(images)
        text = tiny_clean._head_text(words, features["patch_tokens"])
        cmcl, _, logits = release_head(tiny_clean, features, text, tiny_clean.image_size)
        evaluated = tiny_clean.eval().forward_head(features, words)
    torch.testing.assert_close(evaluated.pixel_scores, cmcl[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_clean.global_logits(features, words), logits, atol=1e-4, rtol=1e-5)
