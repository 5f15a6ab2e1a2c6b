"""Formula-level tests of the AD-DINOv3 head on hand-checkable tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medad.models import head


def test_reference_interleaves_and_clean_stacks() -> None:
    u_n = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    u_a = torch.tensor([[10.0, 11.0, 12.0, 13.0]])
    ref = head.combine_text(u_n, u_a, "reference")
    assert ref[0, :, 0].tolist() == [0.0, 2.0, 10.0, 12.0]
    assert ref[0, :, 1].tolist() == [1.0, 3.0, 11.0, 13.0]
    clean = head.combine_text(u_n, u_a, "clean")
    assert clean[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert clean[0, :, 1].tolist() == [10.0, 11.0, 12.0, 13.0]


def test_standardise_tokens_uses_unbiased_std_per_channel() -> None:
    tokens = torch.tensor([[[1.0, 10.0], [2.0, 10.0], [3.0, 40.0]]])
    out = head.standardise_tokens(tokens)
    assert torch.allclose(out[0, :, 0], torch.tensor([-1.0, 0.0, 1.0]) / (1.0 + 1e-6))
    std = math.sqrt(((10 - 20) ** 2 * 2 + 20**2) / 2)
    assert torch.allclose(out[0, :, 1], torch.tensor([-10.0, -10.0, 20.0]) / (std + 1e-6))


def _grid_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """Four unit patch tokens (2x2 grid) and a unit direction giving cosines 1, 0, -1, 0.5."""
    patch = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, math.sqrt(0.75)]]])
    return patch, torch.tensor([[1.0, 0.0]])


def test_cmcl_softmax_comes_after_upsampling() -> None:
    patch, _ = _grid_tokens()
    text = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # normal column = e1, abnormal column = 0
    out = head.cmcl_map(patch, text, 4)
    scores = (100 * patch @ text).permute(0, 2, 1).reshape(1, 2, 2, 2)
    after = torch.softmax(F.interpolate(scores, size=(4, 4), mode="bilinear", align_corners=True), dim=1)
    before = F.interpolate(torch.softmax(scores, dim=1), size=(4, 4), mode="bilinear", align_corners=True)
    assert torch.allclose(out, after)
    assert not torch.allclose(out, before, atol=1e-3)
    # align_corners=True: corner pixels keep the patch scores exactly; row-major patch order
    assert math.isclose(out[0, 1, 0, 0].item(), 1 / (1 + math.exp(100)), abs_tol=1e-12)
    assert math.isclose(out[0, 1, 0, 3].item(), 0.5, abs_tol=1e-6)
    assert math.isclose(out[0, 1, 3, 0].item(), 1 / (1 + math.exp(-100)), rel_tol=1e-6)


def test_aacm_is_sigmoid_of_ten_times_cosine() -> None:
    patch, cls = _grid_tokens()
    out = head.aacm_map(patch, cls, 2)
    sig = torch.sigmoid(torch.tensor([[10.0, 0.0], [-10.0, 5.0]]))
    assert torch.allclose(out[0, 1], sig)
    assert torch.allclose(out[0, 0], 1 - sig)


def test_global_logits_scale() -> None:
    cls = torch.tensor([[0.6, 0.8]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    assert torch.allclose(head.global_logits(cls, text), torch.tensor([[60.0, 40.0]]))


def test_adapter_is_bias_free_linear_with_leaky_relu() -> None:
    adapter = head.Adapter(2, 2)
    with torch.no_grad():
        adapter.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    assert adapter.fc1.bias is None and adapter.fc2 is None
    assert torch.allclose(adapter(torch.tensor([[3.0, 2.0]])), torch.tensor([[3.0, -0.02]]))
    assert head.Adapter(2, 3, keep_fc2=True).fc2.weight.shape == (2, 3)


def test_gaussian_blur_keeps_constants_and_spreads_a_peak() -> None:
    flat = torch.full((1, 9, 9), 0.3)
    assert torch.allclose(head.gaussian_blur(flat, 1.0), flat)
    peak = torch.zeros(1, 21, 21)
    peak[0, 10, 10] = 1.0
    blurred = head.gaussian_blur(peak, 1.0)
    assert blurred[0, 10, 10] < 0.2 and blurred[0, 10, 11] > 0.05
    assert math.isclose(blurred.sum().item(), 1.0, rel_tol=1e-5)
    assert head.gaussian_blur(peak, 0.0) is peak
