"""dinov3_mutual: nearest-patch distances, the k% rule, self-exclusion, blocking, layers, and the scorer's sets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medad.errors import ConfigError
from medad.models import ModelKind, MutualScorer, create_model, model_kind
from medad.models.mutual import mutual_patch_scores, nearest_distances

# three images, two 2-d patches each (hand-placed; distances checkable by hand)
FEATURES = torch.tensor(
    [
        [[0.0, 0.0], [1.0, 0.0]],  # image 0
        [[0.0, 0.0], [0.0, 1.0]],  # image 1
        [[3.0, 0.0], [0.0, 4.0]],  # image 2
    ]
)
INF = math.inf


def test_nearest_distances_by_hand_and_never_against_itself() -> None:
    d = nearest_distances(FEATURES, [0, 1, 2])
    expected = torch.tensor(
        [
            [[INF, 0.0, 3.0], [INF, 1.0, 2.0]],
            [[0.0, INF, 3.0], [1.0, INF, 3.0]],
            [[2.0, 3.0, INF], [4.0, 3.0, INF]],
        ]
    )
    assert torch.allclose(d, expected)
    assert torch.equal(nearest_distances(FEATURES, [2, 0]), expected[[2, 0]])


def test_mutual_scores_smallest_k_fraction_rule() -> None:
    # N = 3: two other images. k = 0.3 -> m = ceil(0.6) = 1 (the nearest other image)
    assert mutual_patch_scores(FEATURES, [0, 1, 2], 0.3).tolist() == [[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]]
    # k = 1 -> m = 2: the mean over both other images
    assert mutual_patch_scores(FEATURES, [0, 1, 2], 1.0).tolist() == [[1.5, 1.5], [1.5, 2.0], [2.5, 3.5]]
    # an image never scores against itself: with a duplicate of image 0, image 0's patches all become 0,
    # but only because of the OTHER copy
    dup = torch.cat([FEATURES, FEATURES[:1]])
    assert mutual_patch_scores(dup, [0, 3], 0.3).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ConfigError):
        mutual_patch_scores(FEATURES[:1], [0])


def test_blocked_computation_is_exact_and_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    feats = torch.nn.functional.normalize(torch.randn(7, 16, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    full = mutual_patch_scores(feats, range(7), 0.5, block_elements=1 << 30)
    largest: list[int] = []
    real = torch.cdist

    def spy(a: torch.Tensor, b: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
        largest.append(a.shape[0] * b.shape[0])
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", spy)
    blocked = mutual_patch_scores(feats, range(7), 0.5, block_elements=2 * 16 * 16)
    assert torch.allclose(full, blocked, atol=1e-6)
    assert max(largest) <= 2 * 16 * 16 and len(largest) > 7
    # brute force reference
    dist = torch.cdist(feats.reshape(-1, 8), feats.reshape(-1, 8)).reshape(7, 16, 7, 16).amin(-1)
    dist[torch.arange(7), :, torch.arange(7)] = INF
    ref = torch.topk(dist, 3, dim=-1, largest=False).values.mean(-1)  # ceil(0.5 * 6) = 3
    assert torch.allclose(full, ref, atol=1e-6)


@pytest.fixture(scope="module")
def tiny() -> MutualScorer:
    return create_model("dinov3_mutual_tiny")


def test_score_set_layers_scaling_and_image_score(tiny: MutualScorer) -> None:
    assert tiny.grid == 4 and model_kind("dinov3_mutual") is not ModelKind.TRAINABLE
    tokens = torch.zeros(3, 2, 16, 2)
    tokens[..., 0] = 1.0  # every patch (1, 0) in both layers
    tokens[2, 0, 5] = torch.tensor([0.0, 1.0])  # image 2, patch 5 odd in layer 1: distance sqrt(2)
    tokens[2, 1, 5] = torch.tensor([-1.0, 0.0])  # ... and opposite in layer 2: distance 2
    model = create_model("dinov3_mutual_tiny", image_score="global", image_topk=1 / 16)
    out = model.score_set({"patch_tokens": tokens})
    patch_scores = model.patch_scores({"patch_tokens": tokens})
    expected = (math.sqrt(2) + 2.0) / 2 / 2  # mean over layers, halved into [0, 1]
    assert patch_scores[2].flatten()[5].item() == pytest.approx(expected)
    assert patch_scores.flatten().count_nonzero().item() == 1
    assert out.image_scores.tolist() == pytest.approx([0.0, 0.0, expected])
    assert out.pixel_scores.shape == (3, 64, 64) and out.pixel_scores.max() <= 1
    part = model.score_set({"patch_tokens": tokens}, [2])
    assert torch.equal(part.pixel_scores[0], out.pixel_scores[2])


def test_forward_treats_the_batch_as_the_set(tiny: MutualScorer) -> None:
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = tiny(images, ["a"] * 4)
    perm = [2, 0, 3, 1]
    again = tiny(images[perm], ["a"] * 4)
    assert torch.allclose(again.image_scores, out.image_scores[perm], atol=1e-6)
    assert torch.allclose(tiny.score_images([images[:2], images[2:]]).pixel_scores, out.pixel_scores, atol=1e-6)
    with pytest.raises(ConfigError, match="at least 2 images"):
        tiny(images[:1], ["a"])
    card = tiny.card()
    assert card["transductive"] is True and card["random_weights"] is True and card["trainable_parameters"] == 0


def test_scorer_scores_each_dataset_class_set_separately_and_resumes(tiny: MutualScorer, tmp_path: Path) -> None:
    from PIL import Image

    from medad.data import make_dataset, manifest_from_paths, normalize_images
    from medad.engine.predictions import PredictionWriter
    from medad.engine.scorer import predictions_meta, score

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    manifest = manifest_from_paths(paths).reset_index(drop=True)
    manifest["class_name"] = ["a", "b", "a", "b", "a"]
    reader = score(tiny, manifest, tmp_path / "pred", batch_size=2, device="cpu", progress=False)
    dataset = make_dataset(manifest, 64, tiny.mean, tiny.std, masks=False, uint8=True)
    images = normalize_images(torch.stack([dataset[i]["image"] for i in range(5)]), tiny.mean, tiny.std)
    for members in ([0, 2, 4], [1, 3]):
        direct = tiny(images[members])
        assert np.allclose(reader.image_scores[members], direct.image_scores.numpy(), atol=1e-5)
    assert reader.get_map(1).shape == (48, 40)
    # resume: with images 0 and 1 already stored, the others are still scored against their whole set
    folder = tmp_path / "resumed"
    with PredictionWriter(folder, chunk_size=2, tag="p0", meta=predictions_meta(tiny, manifest, "clean")) as w:
        w.add([0, 1], [-1.0, -1.0], [np.zeros((48, 40), np.float32)] * 2)
    resumed = score(tiny, manifest, folder, batch_size=2, device="cpu", progress=False, tag="p1")
    assert np.allclose(resumed.image_scores[2:], reader.image_scores[2:], atol=1e-6)
    assert pd.Series(resumed.image_scores[:2]).tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_small_sets_are_defined_or_refused(tiny: MutualScorer, n: int) -> None:
    """Sets of 2..4 images average the nearest other image (m = 1; MuSc's release gives NaN there); 1 is refused."""
    images = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(n))
    if n == 1:
        with pytest.raises(ConfigError, match="at least 2 images per"):
            tiny(images, ["a"])
        return
    out = tiny(images, ["a"] * n)
    assert torch.isfinite(out.pixel_scores).all() and torch.isfinite(out.image_scores).all()
    tokens = tiny.forward_features(images)["patch_tokens"].float()
    per_layer = []
    for layer in range(tokens.shape[1]):
        flat = tokens[:, layer]
        dist = torch.cdist(flat.reshape(-1, flat.shape[-1]), flat.reshape(-1, flat.shape[-1]))
        dist = dist.reshape(n, flat.shape[1], n, flat.shape[1]).amin(-1)
        dist[torch.arange(n), :, torch.arange(n)] = INF
        per_layer.append(dist.amin(-1))  # m = max(1, ceil(0.3 * (n - 1))) = 1: the nearest other image
    expected = (torch.stack(per_layer).mean(0) / 2).reshape(n, tiny.grid, tiny.grid)
    torch.testing.assert_close(tiny.patch_scores({"patch_tokens": tokens}), expected, atol=1e-5, rtol=0)
