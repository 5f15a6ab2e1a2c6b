"""AA-CLIP held to a plain re-derivation of the parts that matter (kept here, written the slow way): prompt
assembly and the adapted text anchors, the V-V attention path of stage 1 (per image and the release's over-the-batch
layout), the adapted vision blocks and projections, the map fusion with the domain blur, the image score, both
stages' losses and the stage schedule the training loop drives."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medad.data import load_manifest, write_layout
from medad.engine import train
from medad.errors import ConfigError, WeightsError
from medad.models import AAClip, TrainingBatch, create_model, load_checkpoint

WORDS = ["bottle", "skin"]


@pytest.fixture(scope="module")
def model() -> AAClip:
    torch.manual_seed(0)
    built = create_model("aa_clip_tiny")
    assert isinstance(built, AAClip)
    return built.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _leaky(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    y = x @ w.T
    return torch.where(y > 0, y, 0.01 * y)


def _mix(w: torch.Tensor, x: torch.Tensor, share: float) -> torch.Tensor:
    """The release's norm-preserving residual adapter, written out."""
    a = _leaky(w, x)
    a = a * torch.sqrt((x * x).sum(-1, keepdim=True)) / torch.sqrt((a * a).sum(-1, keepdim=True))
    return share * a + (1 - share) * x


def _ref_sentence(model: AAClip, sentence: str) -> torch.Tensor:
    """One sentence through the frozen text tower with the adapters (one sentence at a time)."""
    tower: Any = model.text_tower
    tokens = model.tokenizer([sentence])[:, : model.context]
    x = tower.token_embedding(tokens) + tower.positional_embedding
    for i, block in enumerate(tower.transformer.resblocks):
        x = block(x, attn_mask=tower.attn_mask)
        if i < model.config.text_adapt_until:
            x = _mix(model.text.adapters[i].fc.weight, x, 0.1)
    x = tower.ln_final(x)
    eot = int(tokens[0].argmax())
    out = _leaky(model.text.proj.fc.weight, x[0, eot])
    return out / out.norm()


def _ref_anchors(model: AAClip, word: str) -> torch.Tensor:
    normal = [s for w in (word, f"a {word}", f"the {word}") for s in (f"{w}.", f"a photo of {w}.")]
    states = [f"a damaged {word}", f"a broken {word}", f"a {word} with flaw", f"a {word} with defect",
              f"a {word} with damage"]  # fmt: skip
    abnormal = [s for w in states for s in (f"{w}.", f"a photo of {w}.")]
    columns = []
    for sentences in (normal, abnormal):
        mean = torch.stack([_ref_sentence(model, s) for s in sentences]).mean(0)
        columns.append(mean / mean.norm())
    return torch.stack(columns, dim=-1)


def test_text_anchors_are_the_release_ensemble_through_the_adapters(model: AAClip) -> None:
    with torch.no_grad():
        got = model.anchors(["skin", "bottle", "skin"], torch.device("cpu"))
        skin, bottle = _ref_anchors(model, "skin"), _ref_anchors(model, "bottle")
        want = torch.stack([skin, bottle, skin])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def _ref_vv(block: Any, x: torch.Tensor, over_batch: bool) -> torch.Tensor:
    """V-V attention of one block, head by head; ``over_batch`` reads the sequence-first tensor as batch-first
    (what the release's replaced attention does)."""
    y = block.ln_1(x)
    if over_batch:
        y = y.permute(1, 0, 2)  # (N, B, W): the release hands the attention LND tokens
    width = y.shape[-1]
    heads = block.attn.num_heads
    d = width // heads
    v = y @ block.attn.in_proj_weight[2 * width :].T + block.attn.in_proj_bias[2 * width :]
    outs = []
    for h in range(heads):
        vh = v[..., h * d : (h + 1) * d]
        attn = torch.softmax(vh @ vh.transpose(-1, -2) / math.sqrt(d), dim=-1)
        outs.append(attn @ vh)
    out = block.attn.out_proj(torch.cat(outs, dim=-1))
    return out.permute(1, 0, 2) if over_batch else out


def _ref_stage1(model: AAClip, images: torch.Tensor, over_batch: bool) -> torch.Tensor:
    vit: Any = model.vision.model
    blocks = list(vit.transformer.resblocks)
    start = len(blocks) - model.config.surgery_layers
    x = vit._embeds(images)
    for block in blocks:
        x = block(x)
    image = vit.ln_post(x[:, 0]) @ vit.proj
    vv = vit._embeds(images)
    for i, block in enumerate(blocks):
        if i < start:
            vv = block(vv)
        else:
            vv = vv + _ref_vv(block, vv, over_batch)
            vv = vv + block.mlp(block.ln_2(vv))
    patches = vit.ln_post(vv[:, 1:]) @ vit.proj
    return patches / patches.norm(dim=-1, keepdim=True) + (image / image.norm(dim=-1, keepdim=True))[:, None]


@pytest.mark.parametrize("attention", ["image", "batch"])
def test_stage1_features_are_the_vv_path_plus_the_image_embedding(images: torch.Tensor, attention: str) -> None:
    torch.manual_seed(0)
    model = create_model("aa_clip_tiny", surgery_attention=attention).train()
    assert isinstance(model, AAClip)
    with torch.no_grad():
        got = model.forward_features(images)["stage1"]
        want = _ref_stage1(model, images, attention == "batch")
    assert got.shape == (2, 1, 64, 32)  # the last level only: the release's loop keeps that one
    torch.testing.assert_close(got[:, 0], want, atol=1e-5, rtol=1e-5)
    other = _ref_stage1(model, images, attention != "batch")
    assert (got[:, 0] - other).abs().max() > 1e-4  # the two layouts do differ on a batch of two


def _ref_adapted(model: AAClip, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    vit: Any = model.vision.model
    x = vit._embeds(images)
    taps = []
    for i, block in enumerate(vit.transformer.resblocks):
        x = block(x)
        if i < model.config.image_adapt_until:
            x = _mix(model.layer_adapters[i].fc.weight, x, 0.1)
        if i + 1 in model.levels:
            taps.append(vit.ln_post(x[:, 1:]))
    seg = [F.normalize(t @ p.fc.weight.T, dim=-1) for t, p in zip(taps, model.seg_proj, strict=True)]
    det = F.normalize(taps[-1] @ model.det_proj.fc.weight.T, dim=-1).mean(1)
    return seg, det


def _kornia_blur(grid: torch.Tensor, sigma: float, taps: int) -> torch.Tensor:
    """Separable Gaussian with reflected borders, tap by tap."""
    half = taps // 2
    k = torch.tensor([math.exp(-((i - half) ** 2) / (2 * sigma**2)) for i in range(taps)])
    k = k / k.sum()
    side = grid.shape[-1]

    def reflect(i: int) -> int:
        return -i if i < 0 else 2 * (side - 1) - i if i >= side else i

    out = torch.zeros_like(grid)
    for a in range(taps):
        rows = [reflect(r + a - half) for r in range(side)]
        for b in range(taps):
            cols = [reflect(c + b - half) for c in range(side)]
            out += k[a] * k[b] * grid[..., rows, :][..., cols]
    return out


@pytest.mark.parametrize("domain", ["medical", "industrial"])
def test_eval_map_is_the_release_map_rescaled_and_image_scores_follow(images: torch.Tensor, domain: str) -> None:
    torch.manual_seed(0)
    model = create_model("aa_clip_tiny", domain=domain, image_score="max").eval()
    assert isinstance(model, AAClip)
    with torch.no_grad():
        out = model(images, WORDS)
        text = torch.stack([_ref_anchors(model, w) for w in WORDS])
        seg, det = _ref_adapted(model, images)
    sigma, taps = {"medical": (1.5, 9), "industrial": (1.0, 7)}[domain]
    release = torch.zeros(2, 64, 64)
    for s in seg:  # the release's test map: (l_abn + 1 - l_norm) / 2 of 100 x cos, blurred on the grid, summed
        logits = 100.0 * s @ text
        grid = ((logits[..., 1] + 1 - logits[..., 0]) / 2).reshape(2, 1, 8, 8)
        up = F.interpolate(_kornia_blur(grid, sigma, taps), size=(64, 64), mode="bilinear", align_corners=True)
        release += up[:, 0]
    levels = len(seg)
    torch.testing.assert_close(out.pixel_scores, 0.5 + (release - levels / 2) / (200 * levels), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.image_scores, out.pixel_scores.flatten(1).amax(1))
    model.config = model.config.model_copy(update={"image_score": "global"})
    with torch.no_grad():
        global_scores = model(images, WORDS).image_scores
    torch.testing.assert_close(global_scores, ((det[:, None] @ text)[:, 0, 1] + 1) / 2, atol=1e-6, rtol=0)
    assert model.card()["blur"] == {"domain": domain, "sigma": sigma, "taps": taps}


def _ref_focal(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The release's FocalLoss (gamma 2, smooth 1e-5, alpha 1) written pixel by pixel in vector form."""
    p = probs.permute(0, 2, 3, 1).reshape(-1, 2)
    idx = mask.reshape(-1).long()
    onehot = torch.zeros_like(p).scatter_(1, idx[:, None], 1.0).clamp(1e-5, 1 - 1e-5)
    pt = (onehot * p).sum(1) + 1e-5
    return (-((1 - pt) ** 2) * pt.log()).mean()


def _ref_dice(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    inter = (p * m).flatten(1).sum(1)
    return 1 - ((2 * inter + 1) / (p.flatten(1).sum(1) + m.flatten(1).sum(1) + 1)).sum() / p.shape[0]


def _ref_seg_loss(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _ref_focal(probs, mask) + _ref_dice(probs[:, 0], 1 - mask) + _ref_dice(probs[:, 1], mask)


def _ref_probs(patches: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    grid = (100.0 * patches @ text).permute(0, 2, 1).reshape(2, 2, 8, 8)
    return torch.softmax(F.interpolate(grid, size=(64, 64), mode="bilinear", align_corners=True), dim=1)


@pytest.fixture
def masks() -> torch.Tensor:
    m = torch.zeros(2, 1, 64, 64)
    m[1, :, 10:30, 20:40] = 1.0
    return m


def test_stage1_loss_is_last_level_maps_plus_squared_mean_orthogonality(
    images: torch.Tensor, masks: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = create_model("aa_clip_tiny").train()
    assert isinstance(model, AAClip)
    model.set_epoch(0)
    features = model.forward_features(images)
    out = model.forward_head(features, WORDS)
    assert isinstance(out, TrainingBatch) and out.seg_probs.shape == (2, 2, 64, 64)
    losses = model.compute_loss(out, masks, torch.tensor([0, 1]))
    with torch.no_grad():
        text = torch.stack([_ref_anchors(model, w) for w in WORDS])
        probs = _ref_probs(_ref_stage1(model, images, False), text)
        ortho = (text[:, :, 0] * text[:, :, 1]).sum(1).mean() ** 2
    torch.testing.assert_close(out.seg_probs, probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses["total"].detach(), _ref_seg_loss(probs, masks[:, 0]) + 0.1 * ortho,
                               atol=1e-6, rtol=1e-6)  # fmt: skip
    torch.testing.assert_close(losses["orthogonal"], ortho, atol=1e-6, rtol=1e-6)
    losses["total"].backward()
    grads = {n for n, p in model.trainable_modules().named_parameters() if p.grad is not None}
    assert grads == {"text.adapters.0.fc.weight", "text.proj.fc.weight"}


def test_stage2_loss_is_detection_cross_entropy_plus_every_level(images: torch.Tensor, masks: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = create_model("aa_clip_tiny").train()
    assert isinstance(model, AAClip)
    model.set_epoch(1)  # text_epochs=1: epoch 1 is stage 2
    out = model.forward_head(model.forward_features(images), WORDS)
    labels = torch.tensor([0, 1])
    losses = model.compute_loss(out, masks, labels)
    with torch.no_grad():
        text = torch.stack([_ref_anchors(model, w) for w in WORDS])
        seg, det = _ref_adapted(model, images)
        logits = (det[:, None] @ text)[:, 0]
        want = F.cross_entropy(logits, labels) + sum(_ref_seg_loss(_ref_probs(s, text), masks[:, 0]) for s in seg)
    torch.testing.assert_close(out.global_logits.detach(), logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(losses["total"].detach(), want, atol=1e-6, rtol=1e-6)
    losses["total"].backward()
    grads = {n.split(".")[0] for n, p in model.trainable_modules().named_parameters() if p.grad is not None}
    assert grads == {"layer_adapters", "seg_proj", "det_proj"}  # the text side is frozen in stage 2


def test_training_loop_runs_stage_1_then_stage_2_at_their_rates(tmp_path: Any) -> None:
    write_layout(tmp_path / "aux", "mvtec", n_normal=1, n_abnormal=1, size=64, seed=1, classes=["bottle"])
    manifest: pd.DataFrame = load_manifest(tmp_path / "aux", "mvtec", split="test")
    torch.manual_seed(0)
    model = create_model("aa_clip_tiny")
    assert isinstance(model, AAClip)
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(2e-5)]
    snapshots = [model.trainable_state_dict()]
    seen: list[str] = []

    def after(epoch: int, stats: dict[str, float]) -> None:
        snapshots.append(model.trainable_state_dict())
        seen.append("orthogonal" if "orthogonal" in stats else "global")

    train(model, manifest, tmp_path / "run", epochs=2, lr=1e-3, batch_size=2, seed=0, device="cpu",
          cache_dir=tmp_path / "cache", progress=False, on_epoch_end=after)  # fmt: skip
    assert seen == ["orthogonal", "global"]
    for epoch, stage in ((1, "text."), (2, "")):
        changed = {k for k in snapshots[0] if not torch.equal(snapshots[epoch - 1][k], snapshots[epoch][k])}
        assert changed and all(k.startswith("text.") == (stage == "text.") for k in changed), (epoch, changed)
    reloaded = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_002")
    assert all(torch.equal(v, reloaded.trainable_state_dict()[k]) for k, v in snapshots[2].items())


def test_dinov3_variant_trains_its_last_projection_in_stage_1() -> None:
    torch.manual_seed(0)
    model = create_model("aa_clip_dinov3_tiny", image_size=64).train()
    assert isinstance(model, AAClip)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    features = model.forward_features(images)
    vit: Any = model.vision.model
    with torch.no_grad():
        last = vit.forward_intermediates(images, indices=[3], norm=True, intermediates_only=True, output_fmt="NLC")
    torch.testing.assert_close(features["stage1"][:, 0], last[0], atol=1e-5, rtol=0)
    losses = model.compute_loss(model.forward_head(features, WORDS), torch.zeros(2, 1, 64, 64), torch.tensor([0, 1]))
    losses["total"].backward()
    grads = {n for n, p in model.trainable_modules().named_parameters() if p.grad is not None}
    assert grads == {"text.adapters.0.fc.weight", "text.proj.fc.weight", "seg_proj.3.fc.weight"}
    assert model.card()["backbone"]["source"] == "random" and model.card()["levels"] == [1, 2, 3, 4]


def test_bad_configs_and_weights_are_refused(model: AAClip) -> None:
    with pytest.raises(ConfigError, match="domain must be one of industrial, medical"):
        create_model("aa_clip_tiny", domain="dental")
    with pytest.raises(ConfigError, match=r"medical blur \(9 taps\) needs a patch grid wider than 4, got 4"):
        create_model("aa_clip_tiny", image_size=32)
    with pytest.raises(ConfigError, match="image_adapt_until 4 exceeds"):
        create_model("aa_clip_tiny", image_adapt_until=4)
    state = model.trainable_state_dict()
    state.pop("det_proj.fc.weight")
    with pytest.raises(WeightsError, match=r"missing \['det_proj.fc.weight'\]"):
        model.load_trainable_state_dict(state)


def _write_release(model: AAClip, folder: Any, relu: bool = False) -> tuple[Any, Any]:
    """A release run's two checkpoints, in its own layout (nesting, key names, optimiser and epoch beside)."""
    sd = model.trainable_state_dict()
    n_text = model.config.text_adapt_until
    text = {f"{i}.fc.0.weight": sd[f"text.adapters.{i}.fc.weight"] for i in range(n_text)}
    text[f"{n_text}.fc.0.weight"] = sd["text.proj.fc.weight"]
    image = {k.replace(".fc.weight", ".fc.0.weight"): v for k, v in sd.items() if k.startswith("layer_adapters.")}
    proj = ".fc.0.weight" if relu else ".fc.weight"
    image.update({k.replace(".fc.weight", proj): v for k, v in sd.items() if k.startswith(("seg_proj.", "det_proj."))})
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-5, "betas": (0.5, 0.999), "params": [0, 1]}]}
    text_file, image_file = folder / "text_adapter.pth", folder / "image_adapter_20.pth"
    torch.save({"epoch": 5, "text_adapter": text, "text_optimizer": optimizer}, text_file)
    torch.save({"epoch": 20, "image_adapter": image, "image_optimizer": optimizer}, image_file)
    return text_file, image_file


def test_release_checkpoints_load_and_wrong_ones_are_refused(tmp_path: Any) -> None:
    torch.manual_seed(3)
    source = create_model("aa_clip_tiny")
    assert isinstance(source, AAClip)
    text_file, image_file = _write_release(source, tmp_path)
    torch.manual_seed(4)
    loaded = create_model("aa_clip_tiny", release_text_adapter=text_file, release_image_adapter=image_file)
    assert isinstance(loaded, AAClip)
    want = source.trainable_state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.trainable_state_dict().items())
    card = loaded.card()
    assert card["release_adapters"]["image"]["epoch"] == 20 and len(card["release_adapters"]["text"]["sha256"]) == 64
    assert "adapters" not in card["random_parts"]
    with pytest.raises(ConfigError, match="give both release_text_adapter"):
        create_model("aa_clip_tiny", release_text_adapter=text_file)
    wrong = r"expected \{'image_adapter': \{\.\.\.\}, 'epoch': N\}, found \['epoch', 'text_"
    with pytest.raises(WeightsError, match=wrong):
        create_model("aa_clip_tiny", release_text_adapter=text_file, release_image_adapter=text_file)
    other = tmp_path / "other"
    other.mkdir()
    relu_text, relu_image = _write_release(source, other, relu=True)
    with pytest.raises(WeightsError, match=r"trained with relu=True .* build it with relu=True"):
        create_model("aa_clip_tiny", release_text_adapter=relu_text, release_image_adapter=relu_image)
    bigger = create_model("aa_clip_tiny", clip_overrides={**source.config.clip_overrides, "embed_dim": 16})
    assert isinstance(bigger, AAClip)
    small_text, small_image = _write_release(bigger, other)
    with pytest.raises(WeightsError, match=r"text\.proj\.fc\.weight is \(16, 32\), expected \(32, 32\)"):
        create_model("aa_clip_tiny", release_text_adapter=small_text, release_image_adapter=small_image)


def test_weights_check_names_release_files_and_their_size(tmp_path: Any) -> None:
    from medad.models.weights_files import aa_clip_image_architecture, aa_clip_text_architecture, check_weights_file

    torch.manual_seed(3)
    model = create_model("aa_clip_tiny")
    assert isinstance(model, AAClip)
    text_file, image_file = _write_release(model, tmp_path)
    tiny = {"model_name": "ViT-B-16", "overrides": model.config.clip_overrides}
    candidates = [aa_clip_text_architecture(**tiny, until=1), aa_clip_image_architecture(**tiny, until=2, levels=3),
                  aa_clip_image_architecture(**tiny, relu=True, until=2, levels=3)]  # fmt: skip
    text = check_weights_file(text_file, candidates)
    assert text["fits"]["architecture"] == "AA-CLIP text adapter (ViT-B-16, 1 blocks)"
    assert "release_text_adapter" in text["fits"]["usage"] and "Apache-2.0" in text["licence"]
    image = check_weights_file(image_file, candidates)
    assert image["fits"]["architecture"] == "AA-CLIP image adapter (ViT-B-16, 2 blocks, 3 levels, relu=False)"
    released = check_weights_file(text_file)  # the default candidates: the release's ViT-L-14-336 sizes
    assert released["fits"] is None
    assert released["closest"]["architecture"] == "AA-CLIP text adapter (ViT-L-14-336, 3 blocks)"
    assert released["closest"]["wrong_shapes"] == [["0.fc.0.weight", [32, 32], [768, 768]],
                                                   ["1.fc.0.weight", [32, 32], [768, 768]]]  # fmt: skip
