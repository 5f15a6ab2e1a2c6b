"""AdaCLIP (medad.models.adaclip) held to a small re-derivation kept here, written the release's way (sequence-first
tokens, explicit attention, one image and one state at a time, loops over clusters): the prompted vision and text
passes, the per-layer projections, the map fusion, HSF with a plain Lloyd K-means, the image score and the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import kmeans_plusplus

from medad.errors import ConfigError, WeightsError
from medad.models import AdaCLIP, create_model, load_checkpoint, save_checkpoint
from medad.models.adaclip import hsf_embedding, hsf_paper_embedding
from medad.models.adaclip_config import TINY_DEFAULTS
from medad.models.weights_files import adaclip_architecture, check_weights_file, default_architectures
from medad.utils.io import sha256_file

NORMAL = [
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
]
ABNORMAL = ["damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage"]
TEMPLATES = [
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
]
CLASSES = ["metal-nut", "bottle"]
TINY_OVERRIDES = TINY_DEFAULTS["clip_overrides"]


@pytest.fixture(scope="module")
def model() -> AdaCLIP:
    torch.manual_seed(0)
    built = create_model("adaclip_tiny", smoothing_sigma=0.0)
    assert isinstance(built, AdaCLIP)
    with torch.no_grad():  # larger trained parts than their init, so that every prompt visibly moves the outputs
        for p in built.trainable_modules().parameters():
            p.mul_(20.0)
    return built


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _block(block: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One residual block on sequence-first ``(N, B, C)`` tokens with the attention written out."""
    attn = block.attn
    n, b, c = x.shape
    h = attn.num_heads
    y = block.ln_1(x)
    qkv = (y @ attn.in_proj_weight.T + attn.in_proj_bias).reshape(n, b, 3, h, c // h)
    q, k, v = (qkv[:, :, i].reshape(n, b * h, c // h).transpose(0, 1) for i in range(3))
    weights = q @ k.transpose(1, 2) * (c // h) ** -0.5
    if mask is not None:
        weights = weights + mask
    out = (torch.softmax(weights, dim=-1) @ v).transpose(0, 1).reshape(n, b, c)
    x = x + attn.out_proj(out)
    return x + block.mlp(block.ln_2(x))


def _dynamic(generator: torch.nn.Module, embedding: torch.Tensor) -> torch.Tensor:
    return torch.stack([layer(embedding) for layer in generator.head], dim=1)


def _context(prompter: torch.nn.Module, block: int, dynamic: torch.Tensor) -> torch.Tensor:
    """The release's ``(dynamic + static).permute(1, 0, 2).half()`` (promoted back to float32 by ``cat``)."""
    return (dynamic + prompter.static_prompts[block]).permute(1, 0, 2).half().float()


def _reference_vision(model: AdaCLIP, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """(prompted image embedding, per tapped layer the (B, N, W) patch tokens, unprompted CLIP image embedding)."""
    visual = model.vision.model
    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x).permute(1, 0, 2)
    blocks, length = list(visual.transformer.resblocks), model.config.prompt_length
    plain = x
    for block in blocks:
        plain = _block(block, plain)
    embedding = visual.ln_post(plain[0]) @ visual.proj
    dynamic = _dynamic(model.dynamic_visual_prompt_generator, embedding)
    taps = []
    for i, block in enumerate(blocks):
        if i == 0:
            x = torch.cat([x, _context(model.visual_prompter, 0, dynamic)], dim=0)
        elif i < model.config.prompt_depth:
            x = torch.cat([x[: x.shape[0] - length], _context(model.visual_prompter, i, dynamic)], dim=0)
        x = _block(block, x)
        if i + 1 in model.config.layers:
            taps.append(x[: x.shape[0] - length].permute(1, 0, 2)[:, 1:])
    return visual.ln_post(x[0]) @ visual.proj, taps, embedding


def _reference_text(model: AdaCLIP, name: str, dynamic: torch.Tensor) -> torch.Tensor:
    """(E, 2) text embedding of one image: per state, the unit mean of the unit sentence embeddings."""
    tower = model.text_tower
    tokenizer = open_clip.get_tokenizer(model.config.clip_model)
    length, states = model.config.prompt_length, []
    for words in (NORMAL, ABNORMAL):
        tokens = tokenizer([t.format(w.format(name.replace("-", " "))) for w in words for t in TEMPLATES])
        x = (tower.token_embedding(tokens) + tower.positional_embedding).permute(1, 0, 2)
        for i, block in enumerate(tower.transformer.resblocks):
            if 1 <= i < model.config.prompt_depth:
                ctx = _context(model.text_prompter, i, dynamic.expand(x.shape[1], -1, -1))
                x = torch.cat([x[:1], ctx, x[1 + length :]], dim=0)
            x = _block(block, x, tower.attn_mask)
        x = tower.ln_final(x.permute(1, 0, 2))
        feats = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ tower.text_projection
        feats = feats / feats.norm(dim=-1, keepdim=True)
        mean = feats.mean(dim=0)
        states.append(mean / mean.norm())
    return torch.stack(states, dim=1)


def _slow_kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Plain Lloyd iterations from scikit-learn's k-means++ start (the same seed), until no label changes."""
    centres, _ = kmeans_plusplus(points, k, random_state=seed)
    labels = np.full(len(points), -1)
    for _ in range(300):
        new = np.array([min(range(k), key=lambda c: float(((p - centres[c]) ** 2).sum())) for p in points])
        if (new == labels).all():
            break
        labels = new
        centres = np.stack([points[labels == c].mean(axis=0) for c in range(k)])
    return labels


def _reference_hsf(patches: list[torch.Tensor], logits: list[torch.Tensor], k: int, seed: int) -> torch.Tensor:
    """The release's HSF loops: top-5k tokens of the mean map, K-means, per-cluster mean over all layers, mean."""
    scores = torch.softmax(torch.stack(logits, dim=1).mean(dim=1), dim=2)[:, :, 1]
    out = []
    for b in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda i: -float(scores[b, i]))[: min(5 * k, scores.shape[1])]
        chosen = [p[b, order] for p in patches]
        labels = _slow_kmeans(torch.cat(chosen, dim=1).detach().numpy(), k, seed)
        centres = [torch.cat([c[torch.from_numpy(labels == j)] for c in chosen]).mean(dim=0) for j in range(k)]
        out.append(torch.stack(centres).mean(dim=0))
    return F.normalize(torch.stack(out), dim=1)


def _reference(model: AdaCLIP, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The release's forward (both aggregation modes): maps, layer maps, image probabilities."""
    pooled, taps, embedding = _reference_vision(model, images)
    dyn_text = _dynamic(model.dynamic_text_prompt_generator, embedding)
    text = torch.stack([_reference_text(model, n, dyn_text[b : b + 1]) for b, n in enumerate(CLASSES)])
    patches = [F.normalize(layer(t), dim=-1) for layer, t in zip(model.patch_token_layer.head, taps, strict=True)]
    image = F.normalize(model.cls_token_layer.head[0](pooled), dim=-1)
    logits = [100.0 * p @ text for p in patches]
    fused = _reference_hsf(patches, logits, model.config.k_clusters, model.config.kmeans_seed)
    image = F.normalize(0.2 * fused + 0.8 * image, dim=1)
    probs = torch.softmax(100.0 * (image.unsqueeze(1) @ text).squeeze(1), dim=1)
    side = int(logits[0].shape[1] ** 0.5)
    grids = [
        F.interpolate(m.permute(0, 2, 1).reshape(-1, 2, side, side), size=64, mode="bilinear", align_corners=True)
        for m in logits
    ]
    fused_map = torch.softmax(torch.stack(grids, dim=1).mean(dim=1), dim=1)
    layer_maps = [torch.softmax(g, dim=1) for g in grids]
    return {"map": (fused_map[:, 1] + 1 - fused_map[:, 0]) / 2, "probs": probs, "layers": layer_maps}


def _release_loss(
    layer_maps: list[torch.Tensor], probs: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The release's batch-1 loss, image by image (its mask squeezed to (H, W), so dice runs over rows), averaged."""

    def focal(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = p.reshape(p.shape[0], p.shape[1], -1).permute(0, 2, 1).reshape(-1, p.shape[1])
        onehot = F.one_hot(target.reshape(-1).long(), 2).float().clamp(1e-5, 1 - 1e-5)
        pt = (onehot * p).sum(1) + 1e-5
        return (-((1 - pt) ** 2) * pt.log()).mean()

    def dice(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = target.shape[0]
        p, t = p.reshape(n, -1), target.reshape(n, -1)
        return 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / n

    total = torch.zeros(())
    for b in range(probs.shape[0]):
        gt = (masks[b] > 0.5).float().squeeze()
        loss = focal(probs[b : b + 1], labels[b : b + 1].float().unsqueeze(1))
        for am in layer_maps:
            loss = loss + focal(am[b : b + 1], gt) + dice(am[b : b + 1, 1], gt) + dice(am[b : b + 1, 0], 1 - gt)
        total = total + loss
    return total / probs.shape[0]


def _masks() -> torch.Tensor:
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 10:30, 20:50] = 1.0
    return masks


@pytest.fixture(scope="module")
def ref(model: AdaCLIP) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return _reference(model, _images())


def test_forward_equals_the_reference(model: AdaCLIP, ref: dict[str, torch.Tensor]) -> None:
    images = _images()
    with torch.no_grad():
        out = model.eval()(images, CLASSES)
    torch.testing.assert_close(out.pixel_scores, ref["map"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.image_scores, ref["probs"][:, 1], atol=1e-5, rtol=0)
    assert float(ref["map"].std()) > 1e-3 and float((ref["probs"][:, 1] - 0.5).abs().max()) > 1e-3


def test_training_maps_and_loss_equal_the_reference(model: AdaCLIP, ref: dict[str, torch.Tensor]) -> None:
    images, masks, labels = _images(), _masks(), torch.tensor([1, 0])
    with torch.no_grad():
        out = model.train()(images, CLASSES)
        model.eval()
    layer_maps = list(out.seg_probs.split(2, dim=1))
    for got, want in zip(layer_maps, ref["layers"], strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(out.global_logits, dim=-1), ref["probs"], atol=1e-6, rtol=0)
    loss = model.compute_loss(out, masks, labels)
    want = _release_loss(ref["layers"], ref["probs"], masks, labels)
    torch.testing.assert_close(loss["total"], want, atol=1e-6, rtol=0)
    per_image = create_model("adaclip_tiny", dice_rows=False).compute_loss(out, masks, labels)["dice"]
    assert abs(float(per_image) - float(loss["dice"])) > 1e-3  # the release's row dice is not the per-image dice


MOVED_BY = (
    "text_prompter.static_prompts.1",
    "visual_prompter.static_prompts.1",
    "patch_token_layer.head.0.weight",
    "cls_token_layer.head.0.weight",
    "dynamic_visual_prompt_generator.head.1.weight",
    "dynamic_text_prompt_generator.head.0.weight",
)
"""A parameter of every trained part (the text prompt of block 1 is never read: the plain sentence enters it)."""


def test_every_prompt_and_projection_moves_the_outputs(model: AdaCLIP) -> None:
    params = dict(model.trainable_modules().named_parameters())
    with torch.no_grad():
        features = model.eval().forward_features(_images())
        base = model.forward_head(features, CLASSES)
        for name in MOVED_BY:
            saved = params[name].clone()
            params[name].add_(torch.randn_like(saved))
            moved = model.forward_head(features, CLASSES)
            params[name].copy_(saved)
            change = (moved.pixel_scores - base.pixel_scores).abs().amax() + (
                moved.image_scores - base.image_scores
            ).abs().amax()
            assert float(change) > 1e-4, name


def test_hsf_kmeans_equals_a_plain_lloyd_reference() -> None:
    gen = torch.Generator().manual_seed(5)
    patches = [F.normalize(torch.randn(2, 40, 8, generator=gen), dim=-1) for _ in range(3)]
    logits = [torch.randn(2, 40, 2, generator=gen) * 3 for _ in range(3)]
    for k, seed in ((4, 0), (6, 3)):
        got = hsf_embedding(patches, logits, k, seed)
        torch.testing.assert_close(got, _reference_hsf(patches, logits, k, seed), atol=1e-6, rtol=0)
    assert torch.equal(hsf_embedding(patches, logits, 4, 0), hsf_embedding(patches, logits, 4, 0))  # deterministic
    single = torch.stack([p.mean(dim=1) for p in patches]).mean(dim=0)
    assert float((hsf_embedding(patches, logits, 4, 0) - F.normalize(single, dim=-1)).abs().max()) > 1e-3


def _reference_paper_hsf(patches: list[torch.Tensor], logits: list[torch.Tensor], k: int, seed: int) -> torch.Tensor:
    """The paper's HSF as the release's earlier (commented-out) code: K-means of all layer-mean tokens, the centre of
    the cluster with the highest mean abnormal probability."""
    scores = torch.softmax(torch.stack(logits, dim=1).mean(dim=1), dim=2)[:, :, 1]
    tokens = torch.mean(torch.stack(patches, dim=0), dim=0)
    out = []
    for b in range(tokens.shape[0]):
        labels = _slow_kmeans(tokens[b].numpy(), k, seed)
        cluster_scores = {c: float(scores[b, torch.from_numpy(labels == c)].mean()) for c in set(labels.tolist())}
        best = max(cluster_scores, key=lambda c: cluster_scores[c])
        out.append(tokens[b, torch.from_numpy(labels == best)].mean(dim=0))
    return F.normalize(torch.stack(out), dim=1)


def test_paper_hsf_equals_its_reference() -> None:
    gen = torch.Generator().manual_seed(7)
    patches = [F.normalize(torch.randn(2, 30, 8, generator=gen), dim=-1) for _ in range(2)]
    logits = [torch.randn(2, 30, 2, generator=gen) * 3 for _ in range(2)]
    got = hsf_paper_embedding(patches, logits, 4, 1)
    torch.testing.assert_close(got, _reference_paper_hsf(patches, logits, 4, 1), atol=1e-6, rtol=0)
    assert float((got - hsf_embedding(patches, logits, 4, 1)).abs().max()) > 1e-3
    model = create_model("adaclip_tiny", hsf="paper").eval()
    with torch.no_grad():
        assert model(_images(), CLASSES).image_scores.shape == (2,)


def test_hsf_gradient_reaches_the_tokens_not_the_assignment() -> None:
    gen = torch.Generator().manual_seed(6)
    patches = [torch.randn(1, 20, 4, generator=gen).requires_grad_(True)]
    hsf_embedding(patches, [torch.randn(1, 20, 2, generator=gen)], 2, 0).sum().backward()
    grad = patches[0].grad
    assert grad is not None and 0 < int((grad.abs().sum(-1) > 0).sum()) <= 10  # only the 5k = 10 chosen tokens


def test_checkpoint_round_trip_and_wrong_shapes(model: AdaCLIP, tmp_path: Path) -> None:
    path = save_checkpoint(model, tmp_path / "adaclip.safetensors")
    loaded = load_checkpoint(path)
    assert isinstance(loaded, AdaCLIP)
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(images, CLASSES).pixel_scores, model.eval()(images, CLASSES).pixel_scores
        )
    other = create_model("adaclip_tiny", prompt_length=3)
    with pytest.raises(WeightsError, match=r"visual_prompter.static_prompts.0 is \(2, 32\), expected \(3, 32\)"):
        other.load_trainable_state_dict(model.trainable_state_dict())


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="k_clusters 17 exceeds the 16 patch tokens"):
        create_model("adaclip_tiny", k_clusters=17)
    with pytest.raises(ConfigError, match="prompt_depth 3 exceeds the 2 blocks"):
        create_model("adaclip_tiny", prompt_depth=3)
    with pytest.raises(ConfigError, match="hsf_alpha"):
        create_model("adaclip_tiny", hsf_alpha=1.5)
    card = create_model("adaclip_tiny").card()
    assert card["hsf"]["k_clusters"] == 3 and "3 seeds" in card["training_note"]


def _release_file(model: AdaCLIP, path: Path) -> Path:
    """A checkpoint in the release's own format: ``torch.save`` of ``{"clip_model.<part>...": tensor}``."""
    torch.save({f"clip_model.{k}": v.half() for k, v in model.trainable_state_dict().items()}, path)
    return path


def test_release_checkpoint_loads_and_is_recognised(model: AdaCLIP, tmp_path: Path) -> None:
    file = _release_file(model, tmp_path / "pretrained_mvtec_colondb.pth")
    loaded = create_model("adaclip_tiny", release_weights=str(file), smoothing_sigma=0.0).eval()
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value.half().float()), key
    card = loaded.card()
    assert card["release_weights"]["sha256"] == sha256_file(file) and "adapters" not in loaded.random_parts()
    tiny = adaclip_architecture("ViT-B-16", TINY_OVERRIDES, n_layers=2, length=2, depth=2)
    report = check_weights_file(file, [*default_architectures(), tiny])
    assert (
        report["fits"]["architecture"] == "AdaCLIP release checkpoint (ViT-B-16, 2 layers, 2 prompt tokens x 2 blocks)"
    )
    assert "release_weights FILE of model adaclip" in report["fits"]["usage"] and "MIT" in report["licence"]
    big = check_weights_file(file)  # only the full-size candidates: the closest names the wrong shapes
    assert big["fits"] is None and big["closest"]["architecture"].startswith("AdaCLIP release checkpoint")
    assert big["closest"]["n_wrong_shapes"] > 0


def test_release_checkpoint_of_another_size_or_method_is_refused(model: AdaCLIP, tmp_path: Path) -> None:
    other = _release_file(create_model("adaclip_tiny", prompt_length=3), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"static_prompts.0 is \(3, 32\), expected \(2, 32\)"):
        create_model("adaclip_tiny", release_weights=str(other))
    anomalyclip = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, 32)}}, anomalyclip)
    with pytest.raises(
        WeightsError,
        match=r"not an AdaCLIP checkpoint: expected \{clip_model\.text_prompter.*found \['prompt_learner'\]",
    ):
        create_model("adaclip_tiny", release_weights=str(anomalyclip))
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in torch.load(other).items() if "dynamic" not in k}, partial)
    with pytest.raises(WeightsError, match=r"missing \['dynamic_text_prompt_generator"):
        create_model("adaclip_tiny", release_weights=str(partial))
