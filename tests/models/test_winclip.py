"""WinCLIP: window gathering, harmonic aggregation, batched window embeddings, prompts, weights, resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medad.errors import ConfigError, WeightsError
from medad.models import ModelKind, WinCLIP, create_model, model_kind
from medad.models.winclip import CPU_TOKENS_PER_CALL, harmonic_aggregate, winclip_sentences, window_indices
from medad.utils.io import sha256_file


@pytest.fixture(scope="module")
def tiny() -> WinCLIP:
    return create_model("winclip_tiny")


def test_window_indices_on_a_4x4_grid() -> None:
    w = window_indices(4, 2)
    assert w.shape == (9, 4)
    assert w[0].tolist() == [0, 1, 4, 5]
    assert w[1].tolist() == [1, 2, 5, 6]
    assert w[4].tolist() == [5, 6, 9, 10]
    assert w[8].tolist() == [10, 11, 14, 15]
    covering_5 = [i for i in range(9) if 5 in w[i].tolist()]
    assert covering_5 == [0, 1, 3, 4]
    assert window_indices(4, 2, stride=2).tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    # stride 3 cannot reach the last column from 0: the last window is added so every patch is covered
    assert window_indices(4, 2, stride=3)[:, 0].tolist() == [0, 2, 8, 10]
    assert window_indices(4, 3).tolist()[3] == [5, 6, 7, 9, 10, 11, 13, 14, 15]
    with pytest.raises(ConfigError):
        window_indices(4, 5)


def test_harmonic_aggregation_values() -> None:
    w = window_indices(4, 2)
    scores = torch.arange(1, 10, dtype=torch.float32)[None] / 10  # window i scores (i + 1) / 10
    out = harmonic_aggregate(scores, w, 16)[0]
    assert out[0].item() == pytest.approx(0.1)  # only window 0
    assert out[15].item() == pytest.approx(0.9)  # only window 8
    assert out[1].item() == pytest.approx(2 / (10 + 5))  # windows 0 and 1
    assert out[5].item() == pytest.approx(4 / (10 + 5 + 2.5 + 2))  # windows 0, 1, 3, 4
    # the harmonic mean sits below the arithmetic one: one low window pulls a patch down
    assert out[5].item() < (0.1 + 0.2 + 0.4 + 0.5) / 4
    batch = harmonic_aggregate(torch.stack([scores[0], torch.full((9,), 0.5)]), w, 16)
    assert torch.allclose(batch[1], torch.full((16,), 0.5))


def test_batched_window_embeddings_equal_one_window_at_a_time(tiny: WinCLIP) -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = tiny._tokens(images)
        w = window_indices(tiny.grid, 2)
        batched = tiny.window_embeddings(tokens, w)
        assert batched.shape == (2, 9, 32)
        for b in range(2):
            for i in (0, 4, 8):
                seq = torch.cat([tokens[b, :1], tokens[b, 1:][w[i]]])[None]
                assert torch.allclose(batched[b, i], tiny._encode_sequences(seq)[0, 0], atol=1e-5)
        # a window covering the whole grid is the whole image: its embedding is the image's CLS embedding
        whole = tiny.window_embeddings(tokens, window_indices(tiny.grid, tiny.grid))
        assert torch.allclose(whole[:, 0], tiny._encode_sequences(tokens)[:, 0], atol=1e-5)


@pytest.mark.parametrize("window_batch", [4096, 7])
def test_batched_scoring_equals_image_by_image(window_batch: int) -> None:
    """Scoring a batch gives each image the maps, scores and few-shot features it gets alone, also when the window
    chunks (``window_batch`` 7: 9 and 4 windows per image) straddle two images."""
    model = create_model("winclip_tiny", window_batch=window_batch)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    words = ["bottle", "skin lesion", "bottle"]
    batched = model.explain(images, words)
    features = model.reference_features(images, words)
    for i in range(3):
        alone = model.explain(images[i : i + 1], words[i : i + 1])
        for got, want in zip(batched, alone, strict=True):
            torch.testing.assert_close(got[i : i + 1], want, atol=1e-5, rtol=0)
        for key, value in model.reference_features(images[i : i + 1], words[i : i + 1]).items():
            torch.testing.assert_close(features[key][i : i + 1], value, atol=1e-5, rtol=0)


def test_cpu_window_calls_stay_under_the_token_cap() -> None:
    """On CPU a large batch's windows run in calls of at most ``CPU_TOKENS_PER_CALL`` tokens (30 images x 9 2x2
    windows x 5 tokens = 1350 tokens would be one call under ``window_batch`` alone), each a whole number of
    sequences; the whole image still runs in one call."""
    model = create_model("winclip_tiny", scales=[2])
    calls: list[tuple[int, int]] = []
    model.visual.transformer.register_forward_pre_hook(lambda _, args: calls.append(tuple(args[0].shape[:2])))
    model(torch.randn(30, 3, 64, 64, generator=torch.Generator().manual_seed(6)), ["bottle"] * 30)
    assert calls[0] == (30, 17)
    windows = calls[1:]
    assert sum(n for n, _ in windows) == 30 * 9 and {length for _, length in windows} == {5}
    assert max(n * length for n, length in windows) <= CPU_TOKENS_PER_CALL < 30 * 9 * 5


def test_forward_contract_and_policies(tiny: WinCLIP) -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = tiny.explain(images, ["bottle", "skin lesion"])
    assert out.pixel_scores.shape == (2, 64, 64) and out.image_scores.shape == (2,)
    assert out.pixel_scores.min() >= 0 and out.pixel_scores.max() <= 1
    assert torch.equal(out.image_scores, out.global_scores)  # winclip's default: the CLS zero-shot score
    assert out.scale_maps.shape == (2, 4, 4, 4)  # scales 2, 3 + patch map + image scale
    assert torch.allclose(out.scale_maps[:, 3], out.global_scores[:, None, None].expand(-1, 4, 4))
    # the CLS score is the softmax of cosine / temperature against the averaged prompt vectors
    text = tiny.text_features(["bottle", "skin lesion"], images.device)
    cls = F.normalize(tiny._encode_sequences(tiny._tokens(images))[:, 0], dim=-1)
    logits = torch.einsum("be,bek->bk", cls, text) / 0.01
    assert torch.allclose(out.global_scores, torch.softmax(logits, -1)[:, 1], atol=1e-5)
    # one window covering the whole grid + the image scale: every term is the CLS score -> a constant map
    whole = create_model("winclip_tiny", scales=[4], patch_map=False, image_score="max")
    out2 = whole(images, ["bottle", "skin lesion"])
    assert torch.allclose(out2.pixel_scores, out.global_scores[:, None, None].expand(-1, 64, 64), atol=1e-5)
    assert torch.allclose(out2.image_scores, out.global_scores, atol=1e-5)
    with pytest.raises(ConfigError):
        tiny(images, ["bottle"])


def test_prompt_ensemble_is_the_normalised_mean_of_normalised_sentences(tiny: WinCLIP) -> None:
    normal, anomalous = winclip_sentences("polyp")
    assert len(normal) == 7 * 22 and len(anomalous) == 4 * 22
    assert "a photo of the polyp with defect for visual inspection." in anomalous
    with torch.no_grad():
        emb = F.normalize(tiny.clip_text.encode_text(tiny.tokenizer(anomalous)).float(), dim=-1)
    expected = F.normalize(emb.mean(0), dim=-1)
    assert torch.allclose(tiny.text_features(["polyp"], torch.device("cpu"))[0, :, 1], expected, atol=1e-5)


def test_resolution_scales_the_grid_and_window_counts() -> None:
    model = create_model("winclip_tiny", image_size=96)
    assert model.grid == 6 and model.card()["windows_per_scale"] == {"2": 25, "3": 16}
    assert model(torch.zeros(1, 3, 96, 96), ["x"]).pixel_scores.shape == (1, 96, 96)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        create_model("winclip_tiny", image_size=100)
    with pytest.raises(ConfigError, match="exceed"):
        create_model("winclip_tiny", scales=[5])


def test_local_weights_file_sha256_and_positional_resize(tiny: WinCLIP, tmp_path: Path) -> None:
    assert model_kind("winclip") is not ModelKind.TRAINABLE and model_kind("winclip_tiny") is not ModelKind.TRAINABLE
    card = tiny.card()
    assert card["random_weights"] is True and card["clip"]["source"] == "random" and card["trainable_parameters"] == 0
    import open_clip

    from medad.models.weights import seeded
    from medad.models.winclip_config import TINY_DEFAULTS

    kwargs = {k: v for k, v in TINY_DEFAULTS["clip_overrides"].items()}
    kwargs["vision_cfg"] = {**kwargs["vision_cfg"], "image_size": 64}
    kwargs["text_cfg"] = {**open_clip.get_model_config("ViT-B-32")["text_cfg"], **kwargs["text_cfg"]}
    source = seeded(lambda: open_clip.create_model("ViT-B-32", pretrained=None, **kwargs), 7)
    file = tmp_path / "tiny_clip.pt"
    torch.save(source.state_dict(), file)
    loaded = create_model("winclip_tiny", random_init=False, clip_weights=str(file))
    info = loaded.card()["clip"]
    assert info["source"] == "file" and info["sha256"] == sha256_file(file) and loaded.card()["random_weights"] is False
    assert torch.equal(loaded.visual.conv1.weight, source.visual.conv1.weight)
    bigger = create_model("winclip_tiny", random_init=False, clip_weights=str(file), image_size=128)  # 8x8 grid
    assert bigger.visual.positional_embedding.shape == (65, 32)
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("winclip_tiny", random_init=False, clip_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="no separate backbone"):
        create_model("winclip_tiny", backbone="vit_small_patch16_dinov3")
