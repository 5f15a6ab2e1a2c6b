"""AnomalyCLIP (medad.models.anomalyclip) held to a small re-derivation kept here: the V-V attention path (DPAM)
written with explicit q/k/v products in the release's sequence-first layout, the prompt assembly with deep text
tokens, the map fusion, the image score and the loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medad.engine.features import flatten_features
from medad.errors import ConfigError, WeightsError
from medad.models import AnomalyCLIP, create_model, head, load_checkpoint, save_checkpoint
from medad.models.clip_vision import ClipVisionBackbone
from medad.models.losses import dice_loss, focal_loss
from medad.utils.io import sha256_file


@pytest.fixture(scope="module")
def model() -> AnomalyCLIP:
    torch.manual_seed(0)
    built = create_model("anomalyclip_tiny", layers=(2, 3), smoothing_sigma=0.0)
    assert isinstance(built, AnomalyCLIP)
    return built


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _surgery_attention(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's dual attention, sequence first (N, B, C): softmax(q k^T s) v and softmax(v v^T s) v."""
    attn = block.attn
    n, b, c = x.shape
    h = attn.num_heads
    qkv = (x @ attn.in_proj_weight.T + attn.in_proj_bias).reshape(n, b, 3, h, c // h)
    q, k, v = (qkv[:, :, i].reshape(n, b * h, c // h).transpose(0, 1) for i in range(3))
    scale = (c // h) ** -0.5
    ori = torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1) @ v
    vv = torch.softmax(v @ v.transpose(1, 2) * scale, dim=-1) @ v

    def out(t: torch.Tensor) -> torch.Tensor:
        return attn.out_proj(t.transpose(0, 1).reshape(n, b, c))

    return out(vv), out(ori)


def _reference_vision(model: AnomalyCLIP, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """CLIP Surgery's dual path over the last ``dpam_layers`` blocks, tokens taken after the 1-based layers."""
    visual = model.vision.model
    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x).permute(1, 0, 2)
    blocks = list(visual.transformer.resblocks)
    first = len(blocks) - model.config.dpam_layers
    taps = []
    state: torch.Tensor | list[torch.Tensor] = x
    for i, block in enumerate(blocks):
        if i < first:
            y = state if isinstance(state, torch.Tensor) else state[1]
            y = y + _surgery_attention(block, block.ln_1(y))[1]
            state = y + block.mlp(block.ln_2(y))
        elif isinstance(state, list):
            new, ori = state
            res, ori_res = _surgery_attention(block, block.ln_1(ori))
            ori = ori + ori_res
            state = [new + res, ori + block.mlp(block.ln_2(ori))]
        else:
            res, ori_res = _surgery_attention(block, block.ln_1(state))
            ori = state + ori_res
            state = [state + res, ori + block.mlp(block.ln_2(ori))]
        if i + 1 in model.layers:
            taps.append((state[0] if isinstance(state, list) else state).permute(1, 0, 2))
    final = (state[1] if isinstance(state, list) else state).permute(1, 0, 2)
    project = [visual.ln_post(t[:, 1:]) @ visual.proj for t in taps]
    cls = visual.ln_post(final[:, 0]) if model.config.embedding_ln_post else final[:, 0]
    return project, cls @ visual.proj


def test_vision_v_v_path_matches_the_rederivation(model: AnomalyCLIP) -> None:
    images = _images()
    features = model.forward_features(images)
    flatten_features(features)  # plain tensors: the engine's feature cache stores them
    patches, embedding = _reference_vision(model, images)
    for slot, expected in enumerate(patches):
        torch.testing.assert_close(features["patch_tokens"][:, slot], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(features["embedding"], embedding, rtol=0, atol=1e-5)
    plain = ClipVisionBackbone(model.vision.model, model.layers)(images)  # the original path is CLIP's own
    cls = plain["cls_tokens"][:, -1] @ model.vision.model.proj  # projected without ln_post, as the release
    torch.testing.assert_close(features["embedding"], cls, rtol=0, atol=1e-6)
    assert not torch.allclose(features["patch_tokens"][:, -1], model.vision._project(plain["patch_tokens"][:, -1]))
    clip_like = create_model("anomalyclip_tiny", layers=(2, 3), embedding_ln_post=True).forward_features(images)
    torch.testing.assert_close(clip_like["embedding"], plain["embedding"], rtol=0, atol=1e-6)


def _reference_text(model: AnomalyCLIP, fp16: bool = True) -> torch.Tensor:
    """Prompts ``SOS ctx.. rest``; blocks 2..depth see their deep tokens at positions 1..t, rounded to float16 as
    the release's ``.half()`` does (``fp16``); EOT features."""
    tower, learner = model.text_tower, model.prompts
    tokens = learner.tokens
    x = tower.token_embedding(tokens)
    for row, ctx in enumerate((learner.ctx_normal, learner.ctx_abnormal)):
        x[row, 1 : 1 + learner.n_ctx] = ctx
    x = x + tower.positional_embedding
    for i, block in enumerate(tower.transformer.resblocks):
        if 0 < i <= len(learner.deep):
            x = x.clone()
            x[:, 1 : 1 + learner.text_ctx] = learner.deep[i - 1].half().float() if fp16 else learner.deep[i - 1]
        x = block(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)
    eot = x[torch.arange(2), tokens.argmax(dim=-1)] @ tower.text_projection
    return eot / eot.norm(dim=-1, keepdim=True)


def test_prompt_assembly_matches_the_rederivation(model: AnomalyCLIP) -> None:
    import open_clip

    tokens = model.prompts.tokens
    x_id = open_clip.get_tokenizer("ViT-B-16")(["X"])[0, 1]
    assert (tokens[:, 1 : 1 + model.config.n_ctx] == x_id).all()
    words = open_clip.get_tokenizer("ViT-B-16")(["object.", "damaged object."])
    assert torch.equal(tokens[0, 5:7], words[0, 1:3]) and torch.equal(tokens[1, 5:8], words[1, 1:4])
    with torch.no_grad():
        torch.testing.assert_close(model.prompts(), _reference_text(model), rtol=0, atol=1e-6)


def test_deep_tokens_are_rounded_to_float16_as_released() -> None:
    """The release casts the deep tokens with ``.half()`` where they enter a text block (its model is float32
    otherwise): ``deep_tokens_fp16`` (default) does the same; ``False`` keeps them exact."""
    torch.manual_seed(0)
    rounded = create_model("anomalyclip_tiny")
    torch.manual_seed(0)
    exact = create_model("anomalyclip_tiny", deep_tokens_fp16=False)
    assert isinstance(rounded, AnomalyCLIP) and isinstance(exact, AnomalyCLIP)
    with torch.no_grad():
        for learner in (rounded.prompts, exact.prompts):
            learner.deep[0].copy_(3 * torch.randn(learner.deep[0].shape, generator=torch.Generator().manual_seed(1)))
        torch.testing.assert_close(rounded.prompts(), _reference_text(rounded), rtol=0, atol=1e-6)
        torch.testing.assert_close(exact.prompts(), _reference_text(exact, fp16=False), rtol=0, atol=1e-6)
        assert (rounded.prompts() - exact.prompts()).abs().max() > 2e-5  # 20 x the tolerance above


def test_pixel_map_is_smoothed_as_scipy_gaussian_filter(model: AnomalyCLIP) -> None:
    """The release smooths with ``scipy.ndimage.gaussian_filter(sigma=4)``: reflected borders, not replicated."""
    from scipy.ndimage import gaussian_filter

    torch.manual_seed(0)
    smoothed = create_model("anomalyclip_tiny", layers=(2, 3))  # the fixture's weights, sigma 4
    images = _images()
    with torch.no_grad():
        plain = model.forward_head(model.forward_features(images), ["a", "b"]).pixel_scores
        out = smoothed.forward_head(smoothed.forward_features(images), ["a", "b"]).pixel_scores
    expected = torch.from_numpy(gaussian_filter(plain.double().numpy(), sigma=(0, 4, 4))).float()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    small = torch.rand(2, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for sigma in (0.7, 1.3, 4.0):  # radius 3, 5, 16: reflected again and again on a map smaller than the kernel
        blurred = head.gaussian_blur(small, sigma, edge="reflect")
        torch.testing.assert_close(blurred, torch.from_numpy(gaussian_filter(small.numpy(), (0, sigma, sigma))))


def test_maps_image_score_and_loss_follow_the_release(model: AnomalyCLIP) -> None:
    features = model.forward_features(_images())
    model.eval()
    with torch.no_grad():
        out = model.forward_head(features, ["a", "b"])
        text = _reference_text(model)
    maps = []
    for slot in range(2):
        p = F.normalize(features["patch_tokens"][:, slot], dim=-1)
        probs = torch.softmax(p @ text.T / 0.07, dim=-1).reshape(2, 4, 4, 2).permute(0, 3, 1, 2)
        maps.append(F.interpolate(probs, size=(64, 64), mode="bilinear"))
    expected = torch.stack([(m[:, 1] + 1 - m[:, 0]) / 2 for m in maps]).mean(dim=0)
    torch.testing.assert_close(out.pixel_scores, expected, rtol=0, atol=1e-6)
    image = torch.softmax(F.normalize(features["embedding"], dim=-1) @ text.T / 0.07, dim=-1)[:, 1]
    torch.testing.assert_close(out.image_scores, image, rtol=0, atol=1e-6)
    model.train()
    batch = model.forward_head(features, ["a", "b"])
    masks = torch.zeros(2, 1, 64, 64)
    masks[1, :, 10:30, 20:40] = 1
    labels = torch.tensor([0, 1])
    loss = model.compute_loss(batch, masks, labels)
    target = masks[:, 0]
    terms = [focal_loss(m, target) + dice_loss(m[:, 1], target) + dice_loss(m[:, 0], 1 - target) for m in maps]
    logits = F.normalize(features["embedding"], dim=-1) @ text.T / 0.07
    total = 4 * sum(terms[1:], terms[0]) + F.cross_entropy(logits, labels)
    torch.testing.assert_close(loss["total"].detach(), total, rtol=0, atol=1e-5)
    loss["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_modules().parameters())
    model.eval()


def test_checkpoint_round_trip_and_refusals(model: AnomalyCLIP, tmp_path: Path) -> None:
    folder = save_checkpoint(model, tmp_path / "ckpt", {"seed": 0})
    loaded = load_checkpoint(folder)
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value)
    assert loaded.card()["backbone"]["source"] == "random" and loaded.card()["layers"] == [2, 3]
    state = model.trainable_state_dict()
    state["ctx_normal_wrong"] = state.pop("prompts.ctx_normal")
    with pytest.raises(WeightsError, match=r"missing \['prompts\.ctx_normal'\]"):
        model.load_trainable_state_dict(state)
    wider = create_model("anomalyclip_tiny", n_ctx=6)
    with pytest.raises(WeightsError, match=r"prompts\.ctx_abnormal.*\(4, 32\).*\(6, 32\)"):
        wider.load_trainable_state_dict(model.trainable_state_dict())


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"dpam_layers 5 exceeds the 3 vision blocks"):
        create_model("anomalyclip_tiny", dpam_layers=5)
    with pytest.raises(ConfigError, match=r"text_depth 3 exceeds the 2 text blocks"):
        create_model("anomalyclip_tiny", text_depth=3)
    with pytest.raises(ConfigError, match=r"no separate backbone.*weights: \{clip"):
        create_model("anomalyclip_tiny", backbone_weights="/x.pt")
    with pytest.raises(ConfigError, match=r"image_size 70 is not a multiple of the patch size 16"):
        create_model("anomalyclip_tiny", image_size=70)


def _release_state(
    ctx: tuple[torch.Tensor, torch.Tensor], deep: list[torch.Tensor], tokens: torch.Tensor, embedded: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The state dict of the release's ``AnomalyCLIP_PromptLearner`` (one class "object", one state per side):
    ``ctx_pos`` / ``ctx_neg`` ``(1, 1, n, W)``, the token-embedding buffers of its prompts, its int32 prompt ids
    ``(1, 1, 77)``, the deep tokens and the unused ``compound_prompt_projections`` (Linear W -> 896)."""
    n, width = ctx[0].shape
    state: dict[str, torch.Tensor] = {}
    for row, side in enumerate(("pos", "neg")):
        state[f"ctx_{side}"] = ctx[row].detach().reshape(1, 1, n, width).clone()
        state[f"token_prefix_{side}"] = embedded[row : row + 1, None, :1].clone()
        state[f"token_suffix_{side}"] = embedded[row : row + 1, None, 1 + n :].clone()
        state[f"tokenized_prompts_{side}"] = tokens[row : row + 1, None].to(torch.int32).clone()
    for i, tokens_i in enumerate(deep):
        state[f"compound_prompts_text.{i}"] = tokens_i.detach().clone()
        state[f"compound_prompt_projections.{i}.weight"] = torch.zeros(896, width)
        state[f"compound_prompt_projections.{i}.bias"] = torch.zeros(896)
    return state


def _release_file(model: AnomalyCLIP, path: Path) -> Path:
    """The release's ``epoch_N.pth`` of ``model``'s prompts, saved as its train.py does:
    ``torch.save({"prompt_learner": prompt_learner.state_dict()})``."""
    learner = model.prompts
    embedded = model.text_tower.token_embedding(learner.tokens).detach()
    state = _release_state((learner.ctx_normal, learner.ctx_abnormal), list(learner.deep), learner.tokens, embedded)
    torch.save({"prompt_learner": state}, path)
    return path


def _full_size_release_file(path: Path, n_ctx: int = 12) -> Path:
    """A release-format prompt learner at the released size (ViT-L/14@336's 768-wide text tower, 8 x 4 deep
    tokens), random values."""
    import open_clip

    context = " ".join(["X"] * n_ctx)
    tokens = open_clip.get_tokenizer("ViT-L-14-336")([f"{context} object.", f"{context} damaged object."])
    g = torch.Generator().manual_seed(0)
    ctx = (0.02 * torch.randn(n_ctx, 768, generator=g), 0.02 * torch.randn(n_ctx, 768, generator=g))
    deep = [0.02 * torch.randn(4, 768, generator=g) for _ in range(8)]
    torch.save({"prompt_learner": _release_state(ctx, deep, tokens, torch.randn(2, 77, 768, generator=g))}, path)
    return path


def test_release_prompt_learner_file_loads_and_others_are_refused(model: AnomalyCLIP, tmp_path: Path) -> None:
    path = _release_file(model, tmp_path / "epoch_15.pth")
    loaded = create_model("anomalyclip_tiny", layers=(2, 3), release_prompts=str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded.prompts(), model.prompts(), rtol=0, atol=0)
    assert loaded.card()["release_prompts"]["sha256"] == sha256_file(path)
    with pytest.raises(WeightsError, match=r"ctx_pos is \(1, 1, 4, 32\) \(4 context tokens\), this model has 6"):
        create_model("anomalyclip_tiny", n_ctx=6, release_prompts=str(path))
    torch.save({"state_dict": {"prompt_learner.ctx": torch.zeros(2)}}, tmp_path / "adaclip.pth")
    foreign = r"not an AnomalyCLIP prompt learner: expected .*ctx_pos.*found \['prompt_learner\.ctx'\]"
    with pytest.raises(WeightsError, match=foreign):
        create_model("anomalyclip_tiny", release_prompts=str(tmp_path / "adaclip.pth"))
    deeper = torch.load(path, weights_only=True)
    deeper["prompt_learner"]["compound_prompts_text.1"] = torch.zeros(2, 32)
    torch.save(deeper, tmp_path / "deeper.pth")
    with pytest.raises(WeightsError, match=r"fit this anomalyclip_tiny model: unexpected \['prompts\.deep\.1'\];"):
        create_model("anomalyclip_tiny", release_prompts=str(tmp_path / "deeper.pth"))


def test_cached_and_uncached_training_agree(tmp_path: Path) -> None:
    """The frozen V-V path is cached by the engine like AD-DINOv3's features, and training reads it back."""
    from medad.data import load_manifest, write_layout
    from medad.engine.train import train

    write_layout(tmp_path / "data", "mvtec", n_normal=2, n_abnormal=4, size=64, seed=3, classes=["bottle"])
    manifest = load_manifest(tmp_path / "data", "mvtec", split="test")
    settings = dict(epochs=2, lr=1e-3, batch_size=3, seed=5, device="cpu", progress=False)
    runs = {}
    for cached in (True, False):
        torch.manual_seed(0)
        model = create_model("anomalyclip_tiny")
        train(model, manifest, tmp_path / str(cached), cache_features=cached, cache_dir=tmp_path / "cache", **settings)
        runs[cached] = model.trainable_state_dict()
    assert list((tmp_path / "cache" / "features").glob("*/chunk-*.safetensors")), "the feature cache was not written"
    for name, value in runs[True].items():
        torch.testing.assert_close(value, runs[False][name], atol=1e-5, rtol=1e-4)


def test_weights_check_names_the_release_prompt_learner_and_convert_keeps_it_loadable(
    model: AnomalyCLIP, tmp_path: Path
) -> None:
    """``medad weights check`` names a released-size ``epoch_15.pth`` (and its size), refuses one of another size
    naming the shapes; ``medad weights convert`` writes a safetensors copy that ``release_prompts`` loads."""
    from safetensors import safe_open
    from typer.testing import CliRunner

    from medad.cli import app
    from medad.models.anomalyclip_config import TINY_DEFAULTS
    from medad.models.weights_files import convert_weights_file, prompt_learner_architecture

    released = _full_size_release_file(tmp_path / "epoch_15.pth")
    done = CliRunner().invoke(app, ["weights", "check", str(released)])
    assert done.exit_code == 0, done.output
    name = "AnomalyCLIP prompt learner (ViT-L-14-336 text tower: 12 context tokens, 8 x 4 deep tokens)"
    assert f"fits: {name}" in done.output and "release_prompts=FILE" in done.output and "MIT" in done.output
    assert "tensors: 32 (" in done.output and "torch pickle" in done.output
    out = tmp_path / "prompts.safetensors"
    done = CliRunner().invoke(app, ["weights", "convert", str(released), "--out", str(out)])
    assert done.exit_code == 0 and f"wrote 32 tensors ({name})" in done.output, done.output
    with safe_open(str(out), "pt") as copy:
        assert copy.metadata()["architecture"] == name
        assert torch.equal(copy.get_tensor("ctx_pos"), torch.load(released)["prompt_learner"]["ctx_pos"])
    longer = _full_size_release_file(tmp_path / "n_ctx_16.pth", n_ctx=16)
    bad = CliRunner().invoke(app, ["weights", "check", str(longer)])
    assert bad.exit_code == 2 and f"closest: {name}" in bad.output
    assert "ctx_pos: shape [1, 1, 16, 768] in the file, [1, 1, 12, 768] expected" in bad.output

    tiny = prompt_learner_architecture("anomalyclip", "ViT-B-16", TINY_DEFAULTS["clip_overrides"], sizes=(4, 2, 2))
    copy_path = tmp_path / "tiny.safetensors"
    convert_weights_file(_release_file(model, tmp_path / "tiny.pth"), copy_path, [tiny])
    loaded = create_model("anomalyclip_tiny", layers=(2, 3), release_prompts=str(copy_path))
    with torch.no_grad():
        torch.testing.assert_close(loaded.prompts(), model.prompts(), rtol=0, atol=0)
    with pytest.raises(WeightsError, match=r"prompts\.ctx_normal is \(12, 768\), expected \(12, 32\)"):
        create_model("anomalyclip_tiny", n_ctx=12, release_prompts=str(released))
