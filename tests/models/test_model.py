"""The tiny AD-DINOv3 end to end: features, head, maps, scores, loss, text cache, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medad.errors import ConfigError
from medad.models import ADDINOv3, create_model, head
from medad.models.text import TextEncoder


def test_forward_contract(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    out = tiny_clean(images, ["bottle", "skin lesion"])
    assert out.pixel_scores.shape == (2, 112, 112)
    assert out.image_scores.shape == (2,)
    assert out.seg_probs.shape == out.aacm_probs.shape == (2, 2, 112, 112)
    assert out.global_logits.shape == (2, 2)
    assert out.pixel_scores.min() >= 0 and out.pixel_scores.max() <= 1
    assert torch.allclose(out.seg_probs.sum(1), torch.ones(2, 112, 112), atol=1e-5)
    assert torch.equal(out.pixel_scores, out.seg_probs[:, 1])
    assert (tiny_clean.image_size, tiny_clean.mean, tiny_clean.std) == (
        112,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )


def test_features_match_one_forward_intermediates(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    feats = tiny_clean.forward_features(images)
    assert feats["patch_tokens"].shape == (2, 4, 49, 64) and feats["cls_tokens"].shape == (2, 4, 64)
    assert not feats["patch_tokens"].requires_grad
    vit = tiny_clean.backbone.model
    raw = vit.forward_intermediates(
        images, indices=[0, 1, 2, 3], norm=True, return_prefix_tokens=True, intermediates_only=True, output_fmt="NLC"
    )
    patch, prefix = raw[2]
    assert prefix.shape[1] == 5  # CLS + 4 registers removed from the patch tokens
    assert torch.allclose(feats["cls_tokens"][:, 2], prefix[:, 0])  # CLS: final norm, not standardised
    expected = (patch - patch.mean(1, keepdim=True)) / (patch.std(1, keepdim=True) + 1e-6)
    assert torch.allclose(feats["patch_tokens"][:, 2], expected, atol=1e-5)
    # batched == one image at a time
    single = tiny_clean.forward_features(images[1:])
    assert torch.allclose(single["patch_tokens"][0], feats["patch_tokens"][1], atol=1e-5)


def test_cached_features_path_equals_forward(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    direct = tiny_clean(images, ["a", "b"])
    feats = {k: v.half() for k, v in tiny_clean.forward_features(images).items()}
    via = tiny_clean.forward_head({k: v.float() for k, v in feats.items()}, ["a", "b"])
    assert torch.allclose(direct.pixel_scores, via.pixel_scores, atol=1e-2)


def test_maps_are_the_mean_over_layers(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    feats = tiny_clean.forward_features(images)
    out = tiny_clean.forward_head(feats, ["cable", "cable"])
    t0 = tiny_clean.text_features(["cable", "cable"], images.device)
    text = torch.stack([tiny_clean.text_adapters[0](t0[..., 0]), tiny_clean.text_adapters[1](t0[..., 1])], dim=-1)
    segs, aacms, logits = [], [], []
    for i in range(4):
        p = F.normalize(tiny_clean.patch_adapters[i](feats["patch_tokens"][:, i]), dim=-1)
        c = F.normalize(tiny_clean.cls_adapters[i](feats["cls_tokens"][:, i]), dim=-1)
        segs.append(head.cmcl_map(p, text, 112))
        aacms.append(head.aacm_map(p, c, 112))
        logits.append(head.global_logits(c, text))
    assert torch.allclose(out.seg_probs, torch.stack(segs).mean(0), atol=1e-6)
    assert torch.allclose(out.aacm_probs, torch.stack(aacms).mean(0), atol=1e-6)
    assert torch.allclose(out.global_logits, torch.stack(logits).mean(0), atol=1e-4)
    assert not torch.allclose(out.seg_probs, segs[0], atol=1e-4)


def test_image_score_policies(images: torch.Tensor) -> None:
    outs = {}
    for policy in ("global", "max", "blend"):
        torch.manual_seed(0)  # same adapter initialisation for the three models
        outs[policy] = create_model("ad_dinov3_tiny", image_score=policy)(images, ["x", "x"])
    g = torch.softmax(outs["global"].global_logits, dim=-1)[:, 1]
    m = outs["max"].pixel_scores.flatten(1).amax(1)
    assert torch.allclose(outs["global"].image_scores, g)
    assert torch.allclose(outs["max"].image_scores, m)
    assert torch.allclose(outs["blend"].image_scores, (g + m) / 2)


def test_smoothing_changes_only_the_pixel_map(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    plain = create_model("ad_dinov3_tiny")(images, ["x", "x"])
    torch.manual_seed(0)
    smooth = create_model("ad_dinov3_tiny", smoothing_sigma=4.0)(images, ["x", "x"])
    assert torch.allclose(plain.seg_probs, smooth.seg_probs)
    assert torch.allclose(smooth.pixel_scores, head.gaussian_blur(plain.seg_probs[:, 1], 4.0), atol=1e-6)


def test_loss_backprops_only_into_adapters(images: torch.Tensor) -> None:
    model = create_model("ad_dinov3_tiny").train()
    assert not model.backbone.training and not model.text_encoder.training
    out = model(images, ["x", "y"])
    masks = torch.zeros(2, 1, 224, 224)
    masks[1, :, 50:120, 50:120] = 1.0
    loss = model.compute_loss(out, masks, torch.tensor([0, 1]))
    assert set(loss) >= {"total", "seg", "aacm", "global"}
    loss["total"].backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[0].endswith("_adapters") for n in trainable)
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    with pytest.raises(ConfigError, match=r"labels"):
        model.compute_loss(out, masks, torch.tensor([0, -1]))


def test_reference_vs_clean(tiny_clean: ADDINOv3, tiny_reference: ADDINOv3, images: torch.Tensor) -> None:
    ref_keys, clean_keys = set(tiny_reference.trainable_state_dict()), set(tiny_clean.trainable_state_dict())
    assert "patch_adapters.0.fc2.weight" in ref_keys and "patch_adapters.0.fc2.weight" not in clean_keys
    assert clean_keys < ref_keys
    tiny_reference.load_trainable_state_dict(
        {**tiny_reference.trainable_state_dict(), **tiny_clean.trainable_state_dict()}
    )
    a = tiny_clean(images, ["x", "x"]).seg_probs
    b = tiny_reference(images, ["x", "x"]).seg_probs
    assert not torch.allclose(a, b, atol=1e-4)  # same weights, only the text reshape differs
    assert tiny_clean.card()["random_weights"] is True
    assert tiny_reference.card()["text"]["activation"] == "gelu"


def test_wrong_inputs(tiny_clean: ADDINOv3, images: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match=r"one word per image"):
        tiny_clean(images, ["x"])
    with pytest.raises(ConfigError, match=r"\(B, 3, 112, 112\)"):
        tiny_clean(torch.zeros(1, 3, 64, 64), ["x"])


def test_text_embeddings_cached_in_memory_and_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("ad_dinov3_tiny")
    emb = model.text_encoder.encode_word("hazelnut")
    assert emb.shape == (32, 2)
    assert torch.allclose(emb.norm(dim=0), torch.ones(2), atol=1e-5)
    assert model.text_encoder.cache_path("hazelnut").is_file()

    def fail(self: TextEncoder, sentences: list[str]) -> torch.Tensor:
        raise AssertionError("re-encoded although cached")

    monkeypatch.setattr(TextEncoder, "_encode_group", fail)
    assert model.text_encoder.encode_word("hazelnut") is emb
    fresh = create_model("ad_dinov3_tiny")
    assert torch.equal(fresh.text_encoder.encode_word("hazelnut"), emb)  # read back from disk
    other = create_model("ad_dinov3_tiny", text_activation="quickgelu")
    assert other.text_encoder.cache_path("hazelnut") != model.text_encoder.cache_path("hazelnut")


def test_text_matrices_are_copied_to_a_device_once_per_word(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("ad_dinov3_tiny")
    encoder = model.text_encoder
    words = ["bottle", "skin lesion", "bottle"]
    on_cpu = encoder(words)
    copies: list[str] = []
    original = TextEncoder.encode_word
    monkeypatch.setattr(TextEncoder, "encode_word", lambda self, w: copies.append(w) or original(self, w))
    first = encoder(words, "meta")  # any non-CPU device takes the cached-copy path
    second = model.text_features(words, torch.device("meta"))
    assert first.device.type == second.device.type == "meta"
    assert first.shape == second.shape == on_cpu.shape == (3, 32, 2)
    assert sorted(copies) == ["bottle", "skin lesion"]  # encoded / moved once per word, not per call
    encoder.clear_cache()
    encoder(["bottle"], "meta")
    assert copies[-1] == "bottle"


def test_backbone_has_a_fixed_input_size_with_its_rope_table_on_the_model() -> None:
    """The RoPE table is a buffer (moved with the model, built once), and features equal timm's dynamic mode."""
    from medad.models.weights import build_backbone

    overrides = {"depth": 2, "embed_dim": 64, "num_heads": 2}
    fixed, _ = build_backbone("vit_small_patch16_dinov3", random_init=True, img_size=64, overrides=overrides)
    dynamic, _ = build_backbone(
        "vit_small_patch16_dinov3",
        random_init=True,
        img_size=64,
        overrides={**overrides, "dynamic_img_size": True},
    )
    assert "rope.pos_embed_cached" in dict(fixed.named_buffers())
    assert "rope.pos_embed_cached" not in dict(dynamic.named_buffers())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = fixed.eval().forward_intermediates(x, indices=[1], intermediates_only=True, output_fmt="NLC")
        b = dynamic.eval().forward_intermediates(x, indices=[1], intermediates_only=True, output_fmt="NLC")
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)


def test_ensemble_is_normalised_mean_of_normalised_sentences(tiny_clean: ADDINOv3) -> None:
    enc = tiny_clean.text_encoder
    sentences = ["a photo of a x.", "a bad photo of the x."]
    with torch.no_grad():
        feats = F.normalize(enc.tower(enc.tokenizer(sentences)), dim=-1)
    assert torch.allclose(enc._encode_group(sentences), F.normalize(feats.mean(0), dim=-1), atol=1e-6)


@pytest.mark.parametrize("compat", ["clean", "reference"])
@pytest.mark.parametrize("sigma", [0.0, 2.0])
def test_eval_fast_path_equals_training_path(compat: str, sigma: float, images: torch.Tensor) -> None:
    torch.manual_seed(3)
    model = create_model("ad_dinov3_tiny", compat=compat, smoothing_sigma=sigma)
    words = ["bottle", "skin lesion"]
    with torch.no_grad():
        literal = model.train()(images, words)
        fast = model.eval()(images, words)
        fast_logits = model.global_logits(model.forward_features(images), words)
    assert "aacm_probs" not in fast._fields and "seg_probs" not in fast._fields
    torch.testing.assert_close(fast.pixel_scores, literal.pixel_scores, atol=2e-6, rtol=0)
    torch.testing.assert_close(fast.image_scores, literal.image_scores, atol=2e-6, rtol=0)
    torch.testing.assert_close(fast_logits, literal.global_logits, atol=1e-4, rtol=1e-6)


def test_cmcl_anomaly_probability_is_the_softmax_channel_of_the_layer_mean() -> None:
    torch.manual_seed(4)
    patch = F.normalize(torch.randn(2, 3, 16, 8, dtype=torch.float64), dim=-1)
    text = torch.randn(2, 8, 2, dtype=torch.float64) / 10
    expected = torch.stack([head.cmcl_map(patch[:, i], text, 12)[:, 1] for i in range(3)]).mean(0)
    torch.testing.assert_close(head.cmcl_anomaly_probability(patch, text, 12), expected, atol=1e-12, rtol=0)


def test_loss_needs_training_outputs(images: torch.Tensor) -> None:
    model = create_model("ad_dinov3_tiny").eval()
    out = model(images, ["x", "x"])
    with pytest.raises(ConfigError, match=r"model\.train\(\)"):
        model.compute_loss(out, torch.zeros(2, 1, 112, 112), torch.zeros(2, dtype=torch.int64))
