"""anomalydino re-derived from the release's rules (dammsi/AnomalyDINO, Apache-2.0): nearest-neighbour cosine
distance, top-1% image score, PCA foreground mask; and its place in the model contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from medad.errors import ConfigError
from medad.models import AnomalyDINO, ModelKind, check_model_config, create_model, model_kind
from medad.models.anomalydino import first_component, foreground_mask, mean_top_percent
from medad.models.head import gaussian_blur
from medad.models.patch_memory import PatchMemory
from tests.models.fewshot_reference import full_nn_cosine


def release_mean_top1p(distances: np.ndarray) -> float:
    """The release's ``mean_top1p`` (src/post_eval.py), restated."""
    if int(len(distances) * 0.01) == 0:
        return float(np.max(distances))
    return float(np.mean(sorted(distances.flatten(), reverse=True)[: int(len(distances) * 0.01)]))


def morph(mask: np.ndarray, op: str) -> np.ndarray:
    """OpenCV's 3x3 dilation / erosion (default border: outside pixels ignored) of a 2-D uint8 image, by loops."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for i in range(h):
        for j in range(w):
            win = mask[max(0, i - 1) : i + 2, max(0, j - 1) : j + 2]
            out[i, j] = win.any() if op == "dilate" else win.all()
    return out


def release_mask(tokens: np.ndarray, grid: tuple[int, int], threshold: float = 10.0, border: float = 0.2) -> np.ndarray:
    """The release's ``compute_background_mask(masking_type=True)`` (src/backbones.py), with scikit-learn's PCA."""
    first_pc = PCA(n_components=1, svd_solver="randomized", random_state=0).fit_transform(tokens.astype(np.float32))
    mask = first_pc > threshold
    rows = slice(int(grid[0] * border), int(grid[0] * (1 - border)))
    cols = slice(int(grid[1] * border), int(grid[1] * (1 - border)))
    m = mask.reshape(grid)[rows, cols]
    if m.sum() <= m.size * 0.35:
        mask = -first_pc > threshold
    mask = morph(mask, "dilate")  # the release's (P, 1) column: the 3x3 kernel acts along the patch order
    return morph(morph(mask, "dilate"), "erode").reshape(grid)


@pytest.fixture(scope="module")
def tiny() -> AnomalyDINO:
    model = create_model("anomalydino_tiny")
    assert isinstance(model, AnomalyDINO)
    return model


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [16, 99, 100, 1024, 1500])
def test_top_percent_is_the_releases_mean_top1p(n: int) -> None:
    scores = torch.rand(3, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    got = mean_top_percent(scores)
    assert got.tolist() == pytest.approx([release_mean_top1p(row.numpy()) for row in scores])


def test_first_component_matches_scikit_learn_sign_included() -> None:
    tokens = torch.randn(64, 12, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 12)
    expected = PCA(n_components=1, svd_solver="randomized", random_state=0).fit_transform(tokens.numpy())[:, 0]
    np.testing.assert_allclose(first_component(tokens).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("centre_object", [True, False])
def test_foreground_mask_is_the_releases_rule(centre_object: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randn(8, 8, 16, generator=gen)
    region = (slice(2, 6), slice(3, 7)) if centre_object else (slice(0, 8), slice(0, 2))
    tokens[region[0], region[1], 0] += 40.0  # an "object": a strong first component on a block of patches
    tokens[1, 1] = tokens[0, 0]  # isolated points for the dilation and closing to act on
    got = foreground_mask(tokens).numpy()
    expected = release_mask(tokens.reshape(64, 16).numpy(), (8, 8))
    np.testing.assert_array_equal(got, expected)
    assert got[4, 4]  # the centre is foreground: kept as is, or by the flip when the object is at the edge
    assert got.sum() < 64 or not centre_object


def test_forward_refuses_without_references_then_scores_against_them(tiny: AnomalyDINO) -> None:
    assert model_kind("anomalydino") is ModelKind.TRAINING_FREE and tiny.needs_references
    assert tiny.fewshot_weight == 1.0 and tiny.fewshot_radii == (1,)
    tiny.clear_references()
    with pytest.raises(ConfigError, match=r"has none: pass --reference NORMALS --shots K"):
        tiny(_images(1, 0))
    refs, targets = _images(2, 1), _images(3, 2)
    tiny.add_references(refs)
    try:
        out = tiny(targets)
        again = tiny(torch.cat([refs[:1], targets]))
    finally:
        tiny.clear_references()
    # re-derivation: 1 - cos to the nearest reference patch (full matrix), halved into [0, 1]; no aggregation
    ref_tokens = tiny.reference_features(refs)["layer2"].reshape(-1, 64)
    tgt_tokens = tiny.reference_features(targets)["layer2"]
    grid = (full_nn_cosine(tgt_tokens.reshape(-1, 64), ref_tokens) / 2).float().view(3, 4, 4)
    pixel = F.interpolate(grid[:, None], size=64, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.pixel_scores, gaussian_blur(pixel, 4.0).clamp(0, 1), atol=1e-5, rtol=0)
    expected = [release_mean_top1p(g.flatten().numpy()) for g in grid]  # 16 patches: the maximum
    assert out.image_scores.tolist() == pytest.approx(expected, abs=1e-5)
    assert again.image_scores[0] < 1e-5  # a reference matches itself


def test_masked_background_scores_zero_through_the_contract_hook() -> None:
    model = create_model("anomalydino_tiny", masking=True)
    gen = torch.Generator().manual_seed(5)
    targets = torch.randn(2, 8, 8, 16, generator=gen)
    targets[:, 2:6, 3:7, 0] += 40.0  # a centred object: the rest is background
    memory = PatchMemory(model.fewshot_radii or (1,))
    memory.add({"layer2": torch.randn(1, 8, 8, 16, generator=gen)})
    scores = model.fewshot_patch_scores(memory, {"layer2": targets})
    fg = model.foreground({"layer2": targets})
    assert scores.shape == (2, 8, 8) and 0 < int(fg.sum()) < fg.numel()
    assert torch.equal(fg[0], foreground_mask(targets[0]))
    assert torch.equal(scores[~fg], torch.zeros(int((~fg).sum())))
    torch.testing.assert_close(scores[fg], memory.score({"layer2": targets})[fg])
    unmasked = create_model("anomalydino_tiny").fewshot_patch_scores(memory, {"layer2": targets})
    torch.testing.assert_close(unmasked, memory.score({"layer2": targets}))


def test_image_score_of_an_upsampled_map_reads_the_patch_grid(tiny: AnomalyDINO) -> None:
    grid = torch.zeros(1, 4, 4)
    grid[0, 1, 2] = 0.8
    fused = grid.repeat_interleave(16, 1).repeat_interleave(16, 2)  # each patch a 16 x 16 block
    assert tiny.fewshot_image_scores(fused, None).tolist() == pytest.approx([0.8], abs=1e-5)
    release = create_model("anomalydino_tiny", image_topk=0.5)
    top_half = release.fewshot_image_scores(fused, None)  # top 8 of 16 patches: one is 0.8
    assert top_half.tolist() == pytest.approx([0.1], abs=1e-5)


def test_released_and_dinov3_presets_check_without_weights() -> None:
    config = check_model_config("anomalydino")
    assert config.image_size == 448 and config.layers == (12,)
    assert check_model_config("anomalydino_dinov3").layers == (24,)
    weights = AnomalyDINO.needed_weights(config)
    assert weights["backbone"]["id"] == "vit_small_patch14_dinov2.lvd142m"
    assert "Apache" in weights["backbone"]["licence"]
    with pytest.raises(ConfigError, match="multiple of the patch size 14"):
        check_model_config("anomalydino", image_size=450)
    with pytest.raises(ConfigError, match="uses no text"):
        check_model_config("anomalydino", text_weights="x.safetensors")


@pytest.mark.parametrize("name", ["anomalydino", "dinov3_mutual"])
def test_text_free_dino_configs_refuse_text_weights_naming_themselves(name: str) -> None:
    """The shared base of the text-free DINO configs names each model in its refusal, and reports its backbone."""
    with pytest.raises(ConfigError) as refused:
        check_model_config(name, text_weights="x.safetensors")
    assert str(refused.value) == f"{name} uses no text: remove `weights: {{text: ...}}` for this model"
    assert set(check_model_config(name).needed_weights()) == {"backbone"}
    assert check_model_config(name, random_init=True).needed_weights() == {}
