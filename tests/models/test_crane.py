"""Crane / Crane+ (medad.models.crane) held to a small re-derivation kept here, written the way the release lays
it out (sequence first, a two-path list state with its in-place additions, D-Attn per head): E-Attn, D-Attn, the
context-guided prompt assembly, the map fusion, score-based pooling and the loss."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
import torch.nn.functional as F

from medad.errors import ConfigError, WeightsError
from medad.models import Crane, create_model, load_checkpoint, save_checkpoint
from medad.models.anomalyclip_config import TINY_DEFAULTS
from medad.models.crane import dino_attention_weights
from medad.models.losses import dice_loss, focal_loss
from medad.models.weights_files import check_weights_file, format_check, prompt_learner_architecture

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def crane() -> Crane:
    torch.manual_seed(0)
    built = create_model("crane_tiny", smoothing_sigma=0.0)
    assert isinstance(built, Crane)
    return built


@pytest.fixture(scope="module")
def crane_plus() -> Crane:
    torch.manual_seed(1)
    built = create_model("crane_plus_tiny", smoothing_sigma=0.0)
    assert isinstance(built, Crane)
    return built


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _self_correlation(block: Any, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence first (N, B, C): the sum over ``kind`` of softmax(a a^T s) applied to v, and softmax(q k^T s) v."""
    attn = block.attn
    n, b, c = x.shape
    h = attn.num_heads
    qkv = x @ attn.in_proj_weight.T + attn.in_proj_bias
    q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(n, b * h, c // h).transpose(0, 1) for i in range(3))
    scale = (c // h) ** -0.5
    named = {"q": q, "k": k, "v": v}
    weights = [torch.softmax(named[p[0]] @ named[p[0]].transpose(1, 2) * scale, dim=-1) for p in kind.split("+")]
    correlated = weights[0]
    for extra in weights[1:]:
        correlated = correlated + extra
    original = torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1)

    def out(w: torch.Tensor) -> torch.Tensor:
        return attn.out_proj((w @ v).transpose(0, 1).reshape(n, b, c))

    return out(correlated), out(original)


def _dino_grid(model: Crane, images: torch.Tensor) -> torch.Tensor:
    """The release's DINO input (CLIP normalisation undone, clamped, ImageNet's applied) -> (B, C, H, W)."""
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    raw = (images * std + mean).clamp(0, 1)
    dino_in = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    dino = model.vision.dino
    (grid,) = dino.get_intermediate_layers(dino_in, n=1, reshape=True, norm=True)
    return grid


def _dino_attention(block: Any, x: torch.Tensor, grid: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """The release's D-Attn, per head: x (1 + N, B, C) after ln_1; values resized to the DINO grid."""
    attn = block.attn
    _, bsz, c = x.shape
    h = attn.num_heads
    d = c // h
    v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)[2]
    v = v.contiguous().view(-1, bsz * h, d).transpose(0, 1)
    _, _, height, width = grid.shape
    unit = F.normalize(grid.flatten(2, 3), dim=1)
    similarity = torch.einsum("bcm,bcn->bmn", unit, unit)
    similarity = (similarity - similarity.mean(dim=(1, 2), keepdim=True) * beta) * gamma
    similarity[similarity < 0] = float("-inf")
    weights = torch.softmax(similarity.unsqueeze(1).repeat(1, h, 1, 1).reshape(bsz * h, height * width, -1), dim=-1)
    side = math.isqrt(v.shape[1] - 1)
    v = v[:, 1:].reshape(bsz * h, side, side, d).permute(0, 3, 1, 2)
    v = F.interpolate(v, size=(height, width), mode="bilinear", align_corners=False)
    v = v.permute(0, 2, 3, 1).reshape(bsz * h, height * width, d)
    return attn.out_proj(torch.bmm(weights, v).transpose(0, 1).contiguous().view(-1, bsz, c))


def _resize_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(N, B, C) patch tokens resized to a side x side grid."""
    n, b, c = tokens.shape
    old = math.isqrt(n)
    if old == side:
        return tokens
    grid = tokens.permute(1, 0, 2).reshape(b, old, old, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(b, side * side, c).permute(1, 0, 2)


@torch.no_grad()
def _reference_vision(
    model: Crane, images: torch.Tensor, clone: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The release's two-path list state with its in-place additions: the self-correlation path skips the MLP
    and is one tensor added to in place, so a stored tap that is a view of it ends as the last block's (unless
    ``clone``, the paper's per-layer maps); the D-Attn input is what the additions leave in the list after the
    block (first E-Attn block: x + E-Attn residual; later: the original path after its attention residual)."""
    visual, cfg = model.vision.model, model.config
    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    state: Any = visual.ln_pre(x).permute(1, 0, 2)
    grid = _dino_grid(model, images) if cfg.dino_backbone else None
    blocks = list(visual.transformer.resblocks)
    first = len(blocks) - cfg.dpam_layers
    taps = []
    for i, block in enumerate(blocks):
        if i < first:
            state = state + _self_correlation(block, block.ln_1(state), "vv")[1]
            state = state + block.mlp(block.ln_2(state))
            continue
        previous = state
        if isinstance(state, list):
            new, ori = state
            res, ori_res = _self_correlation(block, block.ln_1(ori), cfg.attention)
            ori += ori_res
            ori = ori + block.mlp(block.ln_2(ori))
            new += res
            state = [new, ori]
        else:
            res, ori_res = _self_correlation(block, block.ln_1(state), cfg.attention)
            ori = state + ori_res
            ori = ori + block.mlp(block.ln_2(ori))
            state += res
            state = [state, ori]
        if i + 1 in cfg.layers:
            correlated = state[0][1:].clone() if clone else state[0][1:]
            if grid is None:
                taps.append(correlated)
                continue
            layer_input = previous[1] if isinstance(previous, list) else previous
            taps.append(_dino_attention(block, block.ln_1(layer_input), grid, cfg.dattn_beta, cfg.dattn_gamma))
            taps.append(_resize_tokens(correlated, grid.shape[-1]))
    projected = [visual.ln_post(t.permute(1, 0, 2)) @ visual.proj for t in taps]
    return projected, visual.ln_post(state[1].permute(1, 0, 2)[:, 0]) @ visual.proj


@pytest.mark.parametrize("which", ["crane", "crane_plus", "crane_plus_first_block"])
def test_vision_paths_match_the_rederivation(which: str, request: pytest.FixtureRequest) -> None:
    """``crane_plus_first_block`` also taps the first E-Attn block, whose D-Attn input differs in the release."""
    first_block = which.endswith("first_block")
    model: Crane = create_model("crane_plus_tiny", layers=(2, 3)) if first_block else request.getfixturevalue(which)
    images = _images()
    features = model.forward_features(images)
    patches, embedding = _reference_vision(model, images)
    maps = {"crane": 2, "crane_plus": 2, "crane_plus_first_block": 4}[which]  # Crane+: D-Attn and E-Attn per block
    assert features["patch_tokens"].shape[1] == len(patches) == maps
    for slot, expected in enumerate(patches):
        torch.testing.assert_close(features["patch_tokens"][:, slot], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(features["embedding"], embedding, rtol=0, atol=1e-5)
    if which != "crane":  # D-Attn on the DINO's 8 x 8 grid, not the CLIP's 4 x 4
        assert features["patch_tokens"].shape[2] == 64
        assert not torch.allclose(features["patch_tokens"][:, 0], features["patch_tokens"][:, 1], atol=1e-3)


def test_per_layer_taps_are_the_papers(crane: Crane) -> None:
    images = _images()
    release = crane.forward_features(images)["patch_tokens"]
    torch.testing.assert_close(release[:, 0], release[:, 1], rtol=0, atol=0)  # the release's 2 maps are one
    paper = create_model("crane_tiny", eattn_taps="per_layer")
    paper.load_trainable_state_dict(crane.trainable_state_dict())
    patches, _ = _reference_vision(paper, images, clone=True)
    features = paper.forward_features(images)["patch_tokens"]
    for slot, expected in enumerate(patches):
        torch.testing.assert_close(features[:, slot], expected, rtol=0, atol=1e-5)
    assert not torch.allclose(features[:, 0], features[:, 1], atol=1e-3)


def test_e_attn_kind_matters(crane: Crane) -> None:
    vv = create_model("crane_tiny", attention="vv").forward_features(_images())["patch_tokens"]
    assert not torch.allclose(vv, crane.forward_features(_images())["patch_tokens"], atol=1e-4)


def _reference_text(model: Crane, image: torch.Tensor | None) -> torch.Tensor:
    """The release's pad_suffix: the image embedding after the context, the tokenised prompt gets a copy of the
    token after the context (and drops its last) so that the end token moves one place; then the deep tokens."""
    tower, learner = model.text_tower, model.prompts
    tokens, n = learner.tokens, learner.n_ctx
    rows, ids = [], []
    for b in range(1 if image is None else image.shape[0]):
        for r, ctx in enumerate((learner.ctx_normal, learner.ctx_abnormal)):
            embedded = tower.token_embedding(tokens[r])
            if image is None:
                rows.append(torch.cat([embedded[:1], ctx, embedded[1 + n :]]))
                ids.append(tokens[r])
            else:
                rows.append(torch.cat([embedded[:1], ctx, image[b : b + 1], embedded[1 + n : -1]]))
                ids.append(torch.cat([tokens[r, : 1 + n], tokens[r, 1 + n : 2 + n], tokens[r, 1 + n :]])[:-1])
    x = torch.stack(rows) + tower.positional_embedding
    for i, block in enumerate(tower.transformer.resblocks):
        if 0 < i <= len(learner.deep):
            x = x.clone()
            x[:, 1 : 1 + learner.text_ctx] = learner.deep[i - 1]
        x = block(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)
    eot = x[torch.arange(len(ids)), torch.stack(ids).argmax(dim=-1)] @ tower.text_projection
    return F.normalize(eot, dim=-1).reshape(-1, 2, eot.shape[-1])


def test_context_guided_prompts_match_the_rederivation(crane: Crane) -> None:
    embedding = F.normalize(crane.forward_features(_images())["embedding"], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(crane.prompts(embedding), _reference_text(crane, embedding), rtol=0, atol=1e-6)
        torch.testing.assert_close(crane.prompts(), _reference_text(crane, None)[0], rtol=0, atol=1e-6)
        assert not torch.allclose(crane.prompts(embedding)[0], crane.prompts(), atol=1e-4)
    words = open_clip.get_tokenizer("ViT-B-16")(["damaged object."])
    assert torch.equal(crane.prompts.tokens[1, 5:8], words[0, 1:4])  # X X X X damaged object.


def _reference_head(
    features: dict[str, torch.Tensor], text: torch.Tensor, interpolation: str
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The release's test/train head: per-map logits (B, N, 2), maps (B, S, S, 2), cosine of the pooled feature."""
    patch_list = [F.normalize(features["patch_tokens"][:, m], dim=-1) for m in range(features["patch_tokens"].shape[1])]
    image = F.normalize(features["embedding"], dim=-1)
    logits = [p @ text.permute(0, 2, 1) / 0.07 for p in patch_list]
    maps = []
    for pl in logits:
        side = math.isqrt(pl.shape[1])
        grid = pl.softmax(dim=-1).reshape(pl.shape[0], side, side, 2).permute(0, 3, 1, 2)
        maps.append(F.interpolate(grid, (64, 64), mode=interpolation).permute(0, 2, 3, 1))
    patches = torch.stack(patch_list).mean(dim=0)
    weight = torch.softmax(torch.stack(logits, dim=1).mean(dim=1), dim=-1)[:, :, 1].unsqueeze(-1)
    pooled = F.normalize((patches * weight).sum(dim=1), dim=1)
    feature = F.normalize(0.5 * pooled + 0.5 * image, dim=1)
    return logits, maps, (feature.unsqueeze(1) @ text.permute(0, 2, 1)).squeeze(1)


@pytest.mark.parametrize("which", ["crane", "crane_plus"])
def test_maps_image_score_and_loss_follow_the_release(which: str, request: pytest.FixtureRequest) -> None:
    model: Crane = request.getfixturevalue(which)
    features = model.forward_features(_images())
    model.eval()
    with torch.no_grad():
        out = model.forward_head(features, ["a", "b"])
        _, maps, cosine = _reference_head(features, _reference_text(model, None).expand(2, 2, -1), "bilinear")
    torch.testing.assert_close(out.pixel_scores, torch.stack(maps).mean(dim=0)[..., 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.image_scores, torch.softmax(cosine / 0.07, dim=-1)[:, 1], rtol=0, atol=1e-6)
    model.train()
    batch = model.forward_head(features, ["a", "b"])
    masks = torch.zeros(2, 1, 64, 64)
    masks[1, :, 10:30, 20:40] = 1
    labels = torch.tensor([0, 1])
    loss = model.compute_loss(batch, masks, labels)
    text = _reference_text(model, F.normalize(features["embedding"], dim=-1))
    _, maps, cosine = _reference_head(features, text, "nearest")
    target = masks[:, 0]
    focal = sum(focal_loss(m.permute(0, 3, 1, 2), target) for m in maps)
    dice = sum(dice_loss((1 - m[..., 0] + m[..., 1]) / 2, target) for m in maps)
    total = 2 * focal + 2 * dice + 0.2 * F.cross_entropy(cosine / 0.01, labels)
    torch.testing.assert_close(loss["total"].detach(), torch.as_tensor(total).detach(), rtol=0, atol=1e-6)
    loss["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_modules().parameters())
    model.zero_grad()
    model.eval()


def test_paper_options_change_the_scores(crane: Crane) -> None:
    features = crane.forward_features(_images())
    crane.eval()
    with torch.no_grad():
        base = crane.forward_head(features, ["a", "b"])
        paper = create_model("crane_tiny", smoothing_sigma=0.0, image_prompt_eval=True)
        paper.load_trainable_state_dict(crane.trainable_state_dict())
        guided = paper.eval().forward_head(features, ["a", "b"])
        cls_only = create_model("crane_tiny", smoothing_sigma=0.0, pooling_alpha=0.0)
        cls_only.load_trainable_state_dict(crane.trainable_state_dict())
        plain = cls_only.eval().forward_head(features, ["a", "b"])
    assert not torch.allclose(base.pixel_scores, guided.pixel_scores, atol=1e-5)
    text = crane.prompts()
    image = F.normalize(features["embedding"], dim=-1) @ text.T / 0.07
    torch.testing.assert_close(plain.image_scores, torch.softmax(image, dim=-1)[:, 1], rtol=0, atol=1e-6)


def test_dino_weights_follow_the_release_and_keep_a_row_defined() -> None:
    features = torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(3))
    weights = dino_attention_weights(features, 1.2, 3.0, batch_mean=False)
    unit = F.normalize(features, dim=-1)
    sim = unit @ unit.transpose(1, 2)
    for b in range(2):
        scaled = (sim[b] - sim[b].mean() * 1.2) * 3.0
        scaled[scaled < 0] = float("-inf")
        torch.testing.assert_close(weights[b], torch.softmax(scaled, dim=-1), rtol=0, atol=1e-6)
    batch = dino_attention_weights(features, 1.2, 3.0, batch_mean=True)
    scaled = (sim - sim.mean() * 1.2) * 3.0
    expected = torch.softmax(scaled.masked_fill(scaled < 0, float("-inf")), dim=-1)
    torch.testing.assert_close(batch, expected, rtol=0, atol=1e-6)
    same = torch.ones(1, 4, 5)  # every similarity equals the mean: the release's rows would all be -inf (NaN)
    torch.testing.assert_close(dino_attention_weights(same, 1.2, 3.0, batch_mean=False)[0], torch.eye(4))


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"layers \[1, 3\] must be E-Attn blocks 2\.\.3 \(the last dpam_layers=2\)"):
        create_model("crane_tiny", layers=(1, 3))
    with pytest.raises(ConfigError, match=r"attention must be one of .*got 'qk'"):
        create_model("crane_tiny", attention="qk")
    with pytest.raises(ConfigError, match=r"crane has no DINO branch.*use crane_plus"):
        create_model("crane_tiny", backbone_weights="/x.safetensors")
    with pytest.raises(ConfigError, match=r"image embedding \(16-d\) cannot be a token of the 32-d text tower"):
        create_model("crane_tiny", clip_overrides={**TINY_DEFAULTS["clip_overrides"], "embed_dim": 16})
    with pytest.raises(ConfigError, match=r"image_size 60 is not a multiple of the patch size 8"):
        create_model("crane_plus_tiny", dino_image_size=60)


def _release_file(model: Crane, path: Path) -> Path:
    """The release's ``epoch_N.pth``: ``{"prompt_learner": ...}`` with its (1, 1, ...) nesting and buffers."""
    learner = model.prompts
    embedded = model.text_tower.token_embedding(learner.tokens).detach()
    state: dict[str, torch.Tensor] = {
        "ctx_pos": learner.ctx_normal.detach().reshape(1, 1, *learner.ctx_normal.shape).clone(),
        "ctx_neg": learner.ctx_abnormal.detach().reshape(1, 1, *learner.ctx_abnormal.shape).clone(),
        "token_prefix_pos": embedded[:1, None, :1].clone(),
        "token_suffix_pos": embedded[:1, None, 1 + learner.n_ctx :].clone(),
        "token_prefix_neg": embedded[1:, None, :1].clone(),
        "token_suffix_neg": embedded[1:, None, 1 + learner.n_ctx :].clone(),
        "tokenized_prompts_pos": learner.tokens[:1, None].clone(),
        "tokenized_prompts_neg": learner.tokens[1:, None].clone(),
    }
    state.update({f"compound_prompts_text.{i}": deep.detach().clone() for i, deep in enumerate(learner.deep)})
    torch.save({"prompt_learner": state}, path)
    return path


def test_release_file_loads_with_its_pinned_epoch(crane_plus: Crane, tmp_path: Path) -> None:
    path = _release_file(crane_plus, tmp_path / "epoch_1.pth")
    loaded = create_model("crane_plus_tiny", release_prompts=str(path), epoch=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.prompts(), crane_plus.prompts(), rtol=0, atol=0)
    assert loaded.card()["epoch"] == 1 and loaded.card()["release_prompts"]["file"] == str(path)
    with pytest.raises(ConfigError, match=r"'epoch_1\.pth' is not the pinned epoch 5: pass .*epoch_5\.pth"):
        create_model("crane_plus_tiny", release_prompts=str(path), epoch=5)
    with pytest.raises(WeightsError, match=r"ctx_pos is \(1, 1, 4, 32\) \(4 context tokens\), this model has 6"):
        create_model("crane_plus_tiny", n_ctx=6, release_prompts=str(path))


def test_checkpoint_round_trip_records_the_dino(crane_plus: Crane, tmp_path: Path) -> None:
    folder = save_checkpoint(crane_plus, tmp_path / "ckpt", {"seed": 0})
    loaded = load_checkpoint(folder)
    for key, value in crane_plus.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value)
    card = loaded.card()
    assert card["dino"]["source"] == "random" and card["dattn"] is True and "dino" in card["random_parts"]
    assert card["config"]["dino_backbone"] == "vit_base_patch14_reg4_dinov2.lvd142m"


def _anomalyclip_file(model: Crane, path: Path) -> Path:
    """The same layout plus AnomalyCLIP's unused ``compound_prompt_projections`` (width -> 896)."""
    loaded = torch.load(_release_file(model, path), weights_only=True)
    for i in range(len(model.prompts.deep)):
        loaded["prompt_learner"][f"compound_prompt_projections.{i}.weight"] = torch.zeros(896, 32)
        loaded["prompt_learner"][f"compound_prompt_projections.{i}.bias"] = torch.zeros(896)
    torch.save(loaded, path)
    return path


def test_weights_check_names_the_method_and_size(crane: Crane, tmp_path: Path) -> None:
    tiny = {"text_cfg": TINY_DEFAULTS["clip_overrides"]["text_cfg"]}
    archs = [prompt_learner_architecture(m, "ViT-B-16", tiny, sizes=(4, 2, 2)) for m in ("crane", "anomalyclip")]
    crane_file = _release_file(crane, tmp_path / "epoch_5.pth")
    report = check_weights_file(crane_file, archs)
    name = "Crane prompt learner (ViT-B-16 text tower: 4 context tokens, 1 x 2 deep tokens)"
    assert report["fits"]["architecture"] == name
    assert report["licence"] == "MIT (AlirezaSalehy/Crane release)" and "release_prompts" in format_check(report)
    other = _anomalyclip_file(crane, tmp_path / "epoch_15.pth")
    assert check_weights_file(other, archs)["fits"]["architecture"].startswith("AnomalyCLIP prompt learner")
    with pytest.raises(WeightsError, match=r"not Crane's: .*found 2 more such as compound_prompt_projections\.0\.bias"):
        create_model("crane_tiny", release_prompts=str(other))
    wider = check_weights_file(crane_file, [prompt_learner_architecture("crane", "ViT-B-16", tiny, sizes=(6, 2, 2))])
    assert wider["fits"] is None and ["ctx_pos", [1, 1, 4, 32], [1, 1, 6, 32]] in wider["closest"]["wrong_shapes"]


def test_weights_check_knows_the_released_crane_size(tmp_path: Path) -> None:
    """A zero-filled file of the released layout and size (ViT-L/14@336 text: 768-d, 12 context tokens, 8 x 4)."""
    shapes = prompt_learner_architecture("crane", "ViT-L-14-336").expected()
    ints = {"tokenized_prompts_pos", "tokenized_prompts_neg"}
    state = {k: torch.zeros(v, dtype=torch.int32 if k in ints else torch.float32) for k, v in shapes.items()}
    torch.save({"prompt_learner": state}, tmp_path / "epoch_1.pth")
    fits = check_weights_file(tmp_path / "epoch_1.pth")["fits"]
    name = "Crane prompt learner (ViT-L-14-336 text tower: 12 context tokens, 8 x 4 deep tokens)"
    assert fits["architecture"] == name
    assert shapes["ctx_pos"] == (1, 1, 12, 768) and shapes["token_suffix_pos"] == (1, 1, 64, 768)


def test_medad_models_lists_the_clip_and_the_dino() -> None:
    from medad.models.registry import describe_models

    entries = {entry["name"]: entry for entry in describe_models()}
    plus = entries["crane_plus"]["weights"]
    assert set(plus) == {"clip", "dino"} and plus["dino"]["licence"] == "Apache-2.0 (Meta DINOv2)"
    assert plus["dino"]["option"] == "--backbone-weights" and plus["clip"]["id"] == "ViT-L-14-336/openai"
    assert set(entries["crane"]["weights"]) == {"clip"} and not entries["crane"]["random_weights"]
    assert entries["crane_tiny"]["random_weights"] and entries["crane_plus_tiny"]["random_weights"]
