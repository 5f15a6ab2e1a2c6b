"""AdaCLIP (Cao et al., ECCV 2024): hybrid learnable prompts in the first blocks of both CLIP towers, per-layer
patch projections and the hybrid semantic fusion (HSF) image score. Where the paper and the release differ, the
release is followed (see docs/models.md).

Re-derived from the paper and the public description of its MIT release (caoyunkang/AdaCLIP); no code of it is
used. What is trained: per block ``j < depth`` a *static* prompt of ``length`` tokens in each tower, the *dynamic*
prompt generators (``length`` linear maps of the frozen CLIP image embedding, one set per tower, the same dynamic
prompt added to every block's static one), one linear projection per tapped vision block (residual-stream patch
tokens to the joint space) and one of the image embedding. What is frozen: the whole CLIP.

Vision tower: the prompt tokens are appended after the patch tokens before block 1 and replaced before blocks
``2..depth``; the tapped tokens leave them out. Text tower: the prompt replaces tokens ``1..length`` before blocks
``2..depth`` (block 1 sees the plain sentence). Text embedding: per state, the mean of the unit embeddings of the
state words x 4 templates (the class word in each), re-normalised; the dynamic text prompt makes it per image.

Maps: ``100 * <patch, text>`` per tapped layer. Training: the per-layer softmax maps. Scoring: the softmax of the
layer mean (its abnormal channel), smoothed with a Gaussian (sigma 4). HSF: the ``5 k`` most abnormal tokens of the
mean map, clustered by K-means (scikit-learn's ``KMeans``, k-means++ with a fixed seed) on their layer-concatenated
tokens; the unit mean of the cluster centres (each the mean of its tokens over all layers) is blended ``0.2 / 0.8``
with the projected image embedding; the image score is the abnormal softmax probability of that blend.
Loss: focal(image probabilities) + per layer focal + dice(abnormal, mask) + dice(normal, 1 - mask). The release's
dice runs per image *row* (its batch-1 mask is squeezed to ``(H, W)``): ``dice_rows=True``, the default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models import head
from medad.models.adaclip_config import AdaCLIPConfig
from medad.models.base import (
    Features,
    InferenceBatch,
    TrainableAnomalyModel,
    TrainingBatch,
    policy_image_scores,
    training_outputs,
)
from medad.models.clip_vision import (
    ClipVisionFields,
    build_frozen_clip_text,
    build_frozen_clip_vision,
    frozen_patch_grids,
)
from medad.models.losses import dice_loss, focal_loss, prepare_masks
from medad.models.prompts import ABNORMAL_STATES, NORMAL_STATES
from medad.models.registry import model_config, register_factory
from medad.models.weights import check_weights_path
from medad.utils.io import sha256_file

TEMPLATES = (
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
)
"""The release's four sentence templates (the first four of AD-DINOv3's ensemble)."""


class Projections(nn.Module):
    """``n`` linear maps applied to one input each (``forward`` on a list) or all to the same input (stacked)."""

    def __init__(self, n: int, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.head = nn.ModuleList(nn.Linear(dim_in, dim_out) for _ in range(n))

    def each(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``head[i](inputs[i])``."""
        return [layer(x) for layer, x in zip(self.head, inputs, strict=True)]

    def stacked(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, dim_out)``: every map of one ``(B, dim_in)`` input."""
        return torch.stack([layer(x) for layer in self.head], dim=1)


class StaticPrompts(nn.Module):
    """``depth`` learnable ``(length, width)`` prompts (normal init, std 0.02)."""

    def __init__(self, depth: int, length: int, width: int) -> None:
        super().__init__()
        self.static_prompts = nn.ParameterList(nn.Parameter(torch.randn(length, width) * 0.02) for _ in range(depth))

    def context(self, block: int, dynamic: torch.Tensor, dtype: torch.dtype, fp16: bool) -> torch.Tensor:
        """``(B, length, width)`` prompt of one block: its static prompt plus the ``(B, length, width)`` dynamic one."""
        ctx = dynamic + self.static_prompts[block]
        return (ctx.half() if fp16 else ctx).to(dtype)


class FrozenVision(nn.Module):
    """The frozen CLIP vision tower's unprompted work: the block-1 input and the image embedding (cacheable)."""

    model: Any

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenVision:
        """Keep the frozen tower in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        """``tokens`` ``(B, 1 + N, W)``: the embedded patches after ``ln_pre``; ``embedding`` ``(B, E)``: CLIP's
        image embedding (``ln_post`` of the last CLS token times ``proj``), what the dynamic prompts come from."""
        tokens = self.model._embeds(images)
        x = self.model.transformer(tokens)
        return {"tokens": tokens, "embedding": self.model.ln_post(x[:, 0]) @ self.model.proj}


def hsf_embedding(patches: list[torch.Tensor], logits: list[torch.Tensor], k_clusters: int, seed: int) -> torch.Tensor:
    """HSF: ``(B, E)`` unit mean of the K-means centres of the most abnormal tokens.

    Args:
        patches: Per layer ``(B, N, E)`` unit patch tokens.
        logits: Per layer ``(B, N, 2)`` [normal, abnormal] logits.
        k_clusters: K-means clusters; the ``5 k`` (at most ``N``) most abnormal tokens of the layer-mean map are
            clustered on their layer-concatenated tokens.
        seed: K-means' seed (scikit-learn's ``KMeans``, k-means++ start, ``n_init="auto"``).

    Returns:
        The unit mean over clusters of each cluster's mean token over all layers (gradients flow through the
        tokens, not the assignment; an empty cluster is left out of the mean).
    """
    scores = torch.softmax(torch.stack(logits, dim=1).mean(dim=1), dim=-1)[..., 1]
    top = scores.topk(min(scores.shape[1], 5 * k_clusters), dim=1).indices
    chosen = [p.gather(1, top.unsqueeze(-1).expand(-1, -1, p.shape[-1])) for p in patches]
    flat = torch.cat(chosen, dim=-1).detach().float().cpu().numpy()
    mean_tokens = torch.stack(chosen).mean(dim=0)  # (B, k, E): a cluster's mean over layers and members
    from sklearn.cluster import KMeans

    centres = []
    for b in range(mean_tokens.shape[0]):
        labels = KMeans(n_clusters=k_clusters, n_init="auto", random_state=seed).fit_predict(flat[b])
        onehot = torch.from_numpy(np.eye(k_clusters, dtype=np.float32)[labels]).to(mean_tokens)
        counts = onehot.sum(dim=0)
        members = (onehot.T @ mean_tokens[b])[counts > 0] / counts[counts > 0, None]
        centres.append(members.mean(dim=0))
    return F.normalize(torch.stack(centres), dim=-1)


RELEASE_PREFIX = "clip_model."
"""The release saves its trainer's state dict entries of the learnable parts: ``clip_model.<part>...``, where the
parts carry the names medad's :meth:`AdaCLIP.trainable_modules` uses."""


def trainable_parts(widths: tuple[int, int, int], n_layers: int, length: int, depth: int) -> dict[str, nn.Module]:
    """The trained parts, by the release's names.

    Args:
        widths: ``(vision width, text width, embedding dim)`` of the CLIP.
        n_layers: Tapped vision blocks.
        length: Prompt tokens per block.
        depth: Prompted blocks per tower.
    """
    width, text_width, embed = widths
    return {
        "text_prompter": StaticPrompts(depth, length, text_width),
        "visual_prompter": StaticPrompts(depth, length, width),
        "patch_token_layer": Projections(n_layers, width, embed),
        "cls_token_layer": Projections(1, embed, embed),
        "dynamic_visual_prompt_generator": Projections(length, embed, width),
        "dynamic_text_prompt_generator": Projections(length, embed, text_width),
    }


def read_release_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained parts of a release checkpoint under medad's names (``clip_model.`` stripped).

    Raises:
        WeightsError: not a readable checkpoint, or no AdaCLIP checkpoint (naming the keys expected and found);
            shapes are checked when the state is loaded (:meth:`AdaCLIP.load_trainable_state_dict`).
    """
    file = check_weights_path(path, "AdaCLIP")
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors come as many types
        raise WeightsError(f"{str(file)!r} is not a readable torch checkpoint ({exc}); download it again") from exc
    keys = sorted(loaded) if isinstance(loaded, dict) else []
    if not keys or not all(isinstance(k, str) and k.startswith(RELEASE_PREFIX) for k in keys):
        found = keys[:4] if keys else type(loaded).__name__
        raise WeightsError(
            f"{str(file)!r} is not an AdaCLIP checkpoint: expected {{{RELEASE_PREFIX}text_prompter.static_prompts.N, "
            f"{RELEASE_PREFIX}visual_prompter..., {RELEASE_PREFIX}patch_token_layer.head.N.weight, ...}}, found "
            f"{found}; pass the release's weights/pretrained_*.pth"
        )
    state = {k.removeprefix(RELEASE_PREFIX): v.float() for k, v in loaded.items()}
    return state, {"file": str(file), "sha256": sha256_file(file)}


def hsf_paper_embedding(
    patches: list[torch.Tensor], logits: list[torch.Tensor], k_clusters: int, seed: int
) -> torch.Tensor:
    """The paper's HSF: ``(B, E)`` unit centre of the most abnormal K-means cluster of all layer-mean tokens.

    Args:
        patches: Per layer ``(B, N, E)`` unit patch tokens.
        logits: Per layer ``(B, N, 2)`` [normal, abnormal] logits.
        k_clusters: K-means clusters of the ``N`` layer-mean tokens.
        seed: K-means' seed (scikit-learn's ``KMeans``, as :func:`hsf_embedding`).

    Returns:
        Per image the unit mean token of the cluster whose mean abnormal probability (layer-mean map) is highest.
    """
    scores = torch.softmax(torch.stack(logits, dim=1).mean(dim=1), dim=-1)[..., 1]
    tokens = torch.stack(patches).mean(dim=0)
    flat = tokens.detach().float().cpu().numpy()
    from sklearn.cluster import KMeans

    centres = []
    for b in range(tokens.shape[0]):
        labels = torch.from_numpy(KMeans(n_clusters=k_clusters, n_init="auto", random_state=seed).fit_predict(flat[b]))
        labels = labels.to(tokens.device)
        present = labels.unique()
        best = present[torch.stack([scores[b, labels == c].mean() for c in present]).argmax()]
        centres.append(tokens[b, labels == best].mean(dim=0))
    return F.normalize(torch.stack(centres), dim=-1)


class AdaCLIP(TrainableAnomalyModel):
    """AdaCLIP (trainable: prompts in both towers and projections on a frozen CLIP).

    Args:
        config: The configuration.
        name: Registry name recorded in the card.
    """

    config_class = AdaCLIPConfig
    trained_weights: ClassVar[str] = "weights"
    card_shape: ClassVar[str] = "clip_model, layers, prompt_length, prompt_depth"
    config: AdaCLIPConfig

    text_prompter: StaticPrompts
    visual_prompter: StaticPrompts
    patch_token_layer: Projections
    cls_token_layer: Projections
    dynamic_visual_prompt_generator: Projections
    dynamic_text_prompt_generator: Projections

    def __init__(self, config: AdaCLIPConfig, name: str = "adaclip") -> None:
        self.check_config(config)
        super().__init__(config, name)
        self.layers = tuple(config.layers)
        fields = ClipVisionFields.of(config, config.layers)
        tower, self.vision_info, self.mean, self.std = build_frozen_clip_vision(fields)
        self.vision = FrozenVision(tower)
        text: Any
        text, self.text_info, self.tokenizer = build_frozen_clip_text(config)
        self.text_tower = text
        width, text_width = int(tower.conv1.out_channels), int(text.token_embedding.weight.shape[1])
        embed = int(tower.proj.shape[1])
        parts = trainable_parts((width, text_width, embed), len(self.layers), config.prompt_length, config.prompt_depth)
        for part, module in parts.items():  # the release's names, also in the trainable state dict
            setattr(self, part, module)
        self.release_info: dict[str, Any] | None = None
        if config.release_weights is not None:
            state, self.release_info = read_release_weights(config.release_weights)
            self.load_trainable_state_dict(state)
            self.mark_adapters_trained()

    def train(self, mode: bool = True) -> AdaCLIP:
        """Set the trained parts' mode; both frozen towers always stay in eval mode."""
        super().train(mode)
        self.vision.train(False)
        self.text_tower.train(False)
        return self

    def forward_features(self, images: torch.Tensor) -> Features:
        """The frozen, unprompted work (no grad; cacheable): see :class:`FrozenVision`."""
        self.check_images(images)
        return self.vision(images)

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """Few-shot memory features: the frozen CLIP tower's own residual-stream patch tokens at the tapped layers,
        without AdaCLIP's visual prompts (:func:`~medad.models.clip_vision.frozen_patch_grids`), the raw-token
        memory of AF-CLIP and of the CLIP methods in AdaptCLIP's few-shot tables. ``class_names`` is unused."""
        self.check_images(images)
        return frozen_patch_grids(self.vision.model, images, self.layers)

    def encode_image(self, tokens: torch.Tensor, dynamic: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The prompted vision pass from the block-1 input: ``(B, E)`` image embedding and per tapped layer the
        ``(B, N, W)`` residual-stream patch tokens (without the CLS and prompt tokens)."""
        tower: Any = self.vision.model
        length, x, taps = self.config.prompt_length, tokens, []
        for i, block in enumerate(tower.transformer.resblocks):
            if i < self.config.prompt_depth:
                ctx = self.visual_prompter.context(i, dynamic, x.dtype, self.config.fp16_prompts)
                x = torch.cat([x if i == 0 else x[:, :-length], ctx], dim=1)
            x = block(x)
            if i + 1 in self.layers:
                taps.append(x[:, 1:-length])
        return tower.ln_post(x[:, 0]) @ tower.proj, taps

    def encode_text(self, class_names: list[str], dynamic: torch.Tensor) -> torch.Tensor:
        """``(B, E, 2)`` unit [normal, abnormal] text embeddings of each image's class word and dynamic prompt."""
        tower: Any = self.text_tower
        sentences = [
            [t.format(s.format(name.replace("-", " "))) for s in states for t in TEMPLATES]
            for name in class_names
            for states in (NORMAL_STATES, ABNORMAL_STATES)
        ]
        per_image = sum(len(group) for group in sentences[:2])
        tokens = self.tokenizer([s for group in sentences for s in group])
        tokens = tokens[:, : int(tower.positional_embedding.shape[0])].to(dynamic.device)
        x = tower.token_embedding(tokens) + tower.positional_embedding
        length = self.config.prompt_length
        for i, block in enumerate(tower.transformer.resblocks):
            if 1 <= i < self.config.prompt_depth:
                ctx = self.text_prompter.context(i, dynamic, x.dtype, self.config.fp16_prompts)
                x = torch.cat([x[:, :1], ctx.repeat_interleave(per_image, dim=0), x[:, 1 + length :]], dim=1)
            x = block(x, attn_mask=tower.attn_mask)
        x = tower.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ tower.text_projection
        unit = F.normalize(pooled, dim=-1).reshape(len(class_names), per_image, -1)
        normal = len(NORMAL_STATES) * len(TEMPLATES)
        states = [unit[:, :normal].mean(dim=1), unit[:, normal:].mean(dim=1)]
        return F.normalize(torch.stack(states, dim=-1), dim=1)

    def forward_head(
        self, features: Mapping[str, torch.Tensor], class_names: list[str]
    ) -> InferenceBatch | TrainingBatch:
        """Run the prompted towers from cached features and score (fp32).

        Returns:
            Eval mode: an :class:`InferenceBatch`. Training mode: a :class:`TrainingBatch` whose ``seg_probs`` are
            the per-layer [normal, abnormal] maps stacked on the channel axis ``(B, 2L, S, S)`` (``aacm_probs``
            repeats them) and ``global_logits`` the HSF image logits ``(B, 2)``.
        """
        tokens, embedding = features["tokens"].float(), features["embedding"].float()
        if len(class_names) != tokens.shape[0]:
            raise ConfigError(f"got {len(class_names)} class names for {tokens.shape[0]} images; one per image")
        with torch.autocast(tokens.device.type, enabled=False):
            text = self.encode_text(class_names, self.dynamic_text_prompt_generator.stacked(embedding))
            pooled, taps = self.encode_image(tokens, self.dynamic_visual_prompt_generator.stacked(embedding))
            patches = [F.normalize(p, dim=-1) for p in self.patch_token_layer.each(taps)]
            image = F.normalize(self.cls_token_layer.each([pooled])[0], dim=-1)
            scale = self.config.logit_scale
            logits = [scale * torch.bmm(p, text) for p in patches]  # per layer (B, N, 2)
            if self.config.hsf_alpha > 0:
                fuse = hsf_embedding if self.config.hsf == "release" else hsf_paper_embedding
                fused = fuse(patches, logits, self.config.k_clusters, self.config.kmeans_seed)
                image = F.normalize(self.config.hsf_alpha * fused + (1 - self.config.hsf_alpha) * image, dim=-1)
            global_logits = scale * torch.bmm(image.unsqueeze(1), text).squeeze(1)
            grids = [self._grid(m) for m in logits]
            anomaly = torch.softmax(torch.stack(grids).mean(dim=0), dim=1)[:, 1]
            pixel = head.gaussian_blur(anomaly, self.config.smoothing_sigma).clamp(0.0, 1.0)
            scores = policy_image_scores(self.config.image_score, torch.softmax(global_logits, dim=-1)[:, 1], pixel)
            if self.training:
                seg = torch.cat([torch.softmax(g, dim=1) for g in grids], dim=1)
                return TrainingBatch(pixel, scores, seg, seg, global_logits)
            return InferenceBatch(pixel, scores)

    def _grid(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, 2, S, S)``: one layer's ``(B, N, 2)`` logits upsampled bilinearly (corners aligned, as released)."""
        side = math.isqrt(logits.shape[1])
        grid = logits.transpose(1, 2).reshape(logits.shape[0], 2, side, side)
        return F.interpolate(grid, size=(self.image_size, self.image_size), mode="bilinear", align_corners=True)

    def compute_loss(
        self, outputs: InferenceBatch | TrainingBatch, masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Focal on the image probabilities plus, per layer, focal + dice(abnormal, mask) + dice(normal, 1 - mask)
        (as the release's training step; the dice over image rows with ``dice_rows``).

        Returns:
            ``total`` and the detached terms ``focal``, ``dice``, ``global``.
        """
        outputs = training_outputs(outputs, labels)
        target = prepare_masks(masks, outputs.seg_probs.shape[-1]).squeeze(1)
        focal = dice = outputs.seg_probs.new_zeros(())
        for probs in outputs.seg_probs.split(2, dim=1):
            focal = focal + focal_loss(probs, target)
            dice = dice + self._dice(probs[:, 1], target) + self._dice(probs[:, 0], 1.0 - target)
        image_probs = torch.softmax(outputs.global_logits, dim=-1)[:, :, None, None]
        image = focal_loss(image_probs, labels.to(masks.device).long().view(-1, 1, 1))
        total = image + focal + dice
        return {"total": total, "focal": focal.detach(), "dice": dice.detach(), "global": image.detach()}

    def _dice(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Dice of ``(B, S, S)`` maps: per image row (the release) or per image."""
        if self.config.dice_rows:
            return dice_loss(probs.reshape(-1, probs.shape[-1]), target.reshape(-1, target.shape[-1]))
        return dice_loss(probs, target)

    def trainable_modules(self) -> nn.ModuleDict:
        """Both towers' static prompts, the dynamic prompt generators and the projections (the release's names)."""
        return nn.ModuleDict(
            {
                "text_prompter": self.text_prompter,
                "visual_prompter": self.visual_prompter,
                "patch_token_layer": self.patch_token_layer,
                "cls_token_layer": self.cls_token_layer,
                "dynamic_visual_prompt_generator": self.dynamic_visual_prompt_generator,
                "dynamic_text_prompt_generator": self.dynamic_text_prompt_generator,
            }
        )

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen CLIP vision tower (``backbone``) and text tower (``text``), both read from the CLIP file."""
        return {"backbone": self.vision_info, "text": self.text_info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The unprompted vision pass (the cacheable frozen work)."""
        return [(self.vision, "forward")]

    def card_extras(self) -> dict[str, Any]:
        """``compat``, the tapped ``layers``, the prompt shape, HSF's settings and the training note."""
        cfg = self.config
        return {
            "compat": self.compat,
            "layers": list(self.layers),
            "prompts": {"length": cfg.prompt_length, "depth": cfg.prompt_depth},
            "hsf": {
                "variant": cfg.hsf,
                "k_clusters": cfg.k_clusters,
                "alpha": cfg.hsf_alpha,
                "kmeans": "sklearn",
                "seed": cfg.kmeans_seed,
            },
            "release_weights": self.release_info,
            "training_note": "unstable training (the release's README): run at least 3 seeds and report the spread",
        }



@register_factory(AdaCLIP)
def adaclip(**cfg: Any) -> AdaCLIP:
    """Build ``adaclip`` (its catalogue entry: :mod:`medad.models.adaclip_config`)."""
    return AdaCLIP(model_config("adaclip", AdaCLIPConfig, **cfg), name="adaclip")


@register_factory(AdaCLIP)
def adaclip_tiny(**cfg: Any) -> AdaCLIP:
    """Build ``adaclip_tiny`` (its catalogue entry: :mod:`medad.models.adaclip_config`)."""
    return AdaCLIP(model_config("adaclip_tiny", AdaCLIPConfig, **cfg), name="adaclip_tiny")
