"""Crane and Crane+ (Salehi et al., arXiv 2504.11055): AnomalyCLIP's learnable prompts with the image embedding
in the prompt, scored against the patch tokens of a self-correlation attention path (E-Attn) of the frozen CLIP
vision tower; Crane+ adds attention whose weights are the patch similarities of a frozen DINO (D-Attn). Where
the paper and the release differ, the release is followed (see docs/models.md).

Re-derived from the paper and the public description of its MIT release (AlirezaSalehy/Crane); no code of it is
used. The prompt learner, the frozen towers and the weights handling are AnomalyCLIP's
(:mod:`medad.models.anomalyclip`); what differs:

- **Context-guided prompts**: in training the unit image embedding is one more prompt token after the learnable
  context (the release's ``pad_suffix``), so the text embeddings are per image; the release scores without it
  (its test script's ``train_with_img_cls_prob`` is 0): ``image_prompt_eval=True`` is the paper's choice.
- **E-Attn**: in the last ``dpam_layers`` blocks a second path sums ``softmax(a a^T / sqrt(d)) v`` over
  ``a`` in q, k, v (``attention``), accumulated without MLP beside the original path; its patch tokens are tapped.
  The release's taps are views of that one in-place accumulated tensor, so each of Crane's maps of 6/12/18/24 is
  the last block's (``eattn_taps: final``, the default); ``per_layer`` is the paper's.
- **D-Attn** (Crane+): at each tapped block, CLIP's values of the original path (after the block's attention, as
  the release's in-place addition leaves them) are averaged with weights ``softmax`` of the DINO patch cosine
  similarities shifted by ``beta`` x their mean, scaled by ``gamma``, negatives dropped; both the D-Attn and the
  E-Attn tokens of the block give a map.
- **Maps**: the mean of the per-map softmax probabilities (``soft_mean``); **image score**: the image embedding
  averaged (alpha 0.5) with the patch tokens pooled by their abnormal probability (score-based pooling).
- **Loss**: 2 x (focal + dice of ``(p_abn + 1 - p_norm) / 2``) per map + 0.2 x CE of the image logits at
  temperature 0.01; the training maps are upsampled ``nearest`` as released.

The release scores the medical sets with the prompts of training epoch 1 for Crane+ (epoch 5 otherwise):
``epoch`` records the epoch of the prompts a model scores with and pins the release file ``epoch_N.pth``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models import head
from medad.models.anomalyclip import AnomalyCLIP, dual_attention
from medad.models.base import RGB, Features, InferenceBatch, TrainingBatch, policy_image_scores, training_outputs
from medad.models.crane_config import CraneConfig, DinoFields
from medad.models.dinov3 import build_frozen_dino
from medad.models.losses import dice_loss, focal_loss, prepare_masks
from medad.models.registry import model_config, register_factory
from medad.models.weights_files import read_weights


def dino_attention_weights(features: torch.Tensor, beta: float, gamma: float, batch_mean: bool) -> torch.Tensor:
    """D-Attn's ``(B, M, M)`` weights from ``(B, M, C)`` DINO patch tokens: cosine similarities minus ``beta`` x
    their mean (per image, or over the batch), times ``gamma``, negatives dropped, softmax over each row.

    The diagonal is always kept: where any similarity of a row survives the diagonal (the largest) does too, so
    this changes nothing there; a row with none left (the release gives NaN) then attends to its own patch.
    """
    unit = F.normalize(features, dim=-1)
    similarity = unit @ unit.transpose(1, 2)
    mean = similarity.mean() if batch_mean else similarity.mean(dim=(1, 2), keepdim=True)
    scaled = (similarity - mean * beta) * gamma
    keep = (scaled >= 0) | torch.eye(scaled.shape[-1], dtype=torch.bool, device=scaled.device)
    return torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)


def regrid_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """``(B, N, C)`` patch tokens of a square grid bilinearly resized to ``side`` x ``side`` (unchanged if equal)."""
    old = math.isqrt(tokens.shape[1])
    if old == side:
        return tokens
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, old, old)
    grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def dino_attention(block: Any, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """D-Attn of one block: its values of ``ln_1(tokens)`` ``(B, 1 + N, C)`` (patches resized to the DINO grid)
    averaged with ``weights`` ``(B, M, M)`` (the same for every head), through the output projection."""
    attn = block.attn
    width = tokens.shape[-1]
    values = F.linear(block.ln_1(tokens), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
    values = regrid_tokens(values[:, 1:], math.isqrt(weights.shape[-1]))
    return attn.out_proj(weights @ values)


class CraneVision(nn.Module):
    """The frozen CLIP vision tower with E-Attn in its last ``dpam_layers`` blocks and, for Crane+, D-Attn from a
    frozen DINO at the tapped blocks.

    Args:
        model: open_clip's ``VisionTransformer``.
        config: The model's config.
        dino: The frozen timm DINO (Crane+) or ``None``.
        norms: CLIP's then the DINO's (mean, std): images are re-normalised for the DINO.
    """

    model: Any
    dino: Any
    clip_mean: torch.Tensor
    clip_std: torch.Tensor
    dino_mean: torch.Tensor
    dino_std: torch.Tensor

    def __init__(self, model: nn.Module, config: CraneConfig, dino: nn.Module | None, norms: tuple[RGB, ...]) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.dino = None if dino is None else dino.eval().requires_grad_(False)
        self.config = config
        self.layers = tuple(config.layers)
        self.start = len(self.model.transformer.resblocks) - config.dpam_layers
        for name, values in zip(("clip_mean", "clip_std", "dino_mean", "dino_std"), norms, strict=False):
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> CraneVision:
        """Keep the frozen towers in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.ln_post(tokens) @ self.model.proj

    def _dino_weights(self, images: torch.Tensor) -> torch.Tensor | None:
        """D-Attn weights of the images (CLIP-normalised; back to [0, 1], then the DINO's normalisation)."""
        if self.dino is None:
            return None
        raw = (images * self.clip_std + self.clip_mean).clamp(0.0, 1.0)
        side = self.config.dino_image_size or images.shape[-1]
        if side != images.shape[-1]:
            raw = F.interpolate(raw, size=(side, side), mode="bilinear", align_corners=False)
        tokens = self.dino.forward_intermediates(
            (raw - self.dino_mean) / self.dino_std, indices=1, norm=True, intermediates_only=True, output_fmt="NLC"
        )[-1]
        cfg = self.config
        return dino_attention_weights(tokens.float(), cfg.dattn_beta, cfg.dattn_gamma, cfg.dattn_mean == "batch")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        """``patch_tokens`` ``(B, M, N, E)``: projected patch tokens of the maps (per tapped block: E-Attn; Crane+:
        D-Attn then E-Attn on the DINO grid); ``embedding`` ``(B, E)``: the projected CLS token of the original
        path (through ``ln_post`` with ``embedding_ln_post``, as the release)."""
        weights = self._dino_weights(images)
        x = self.model._embeds(images)
        correlated: torch.Tensor | None = None
        taps: list[torch.Tensor | None] = []
        for i, block in enumerate(self.model.transformer.resblocks):
            if i < self.start:
                x = block(x)
                continue
            original, surgery = dual_attention(block, x, self.config.attention)
            # what the release's in-place additions leave as the block's D-Attn input
            middle = x + surgery if correlated is None else x + block.ls_1(original)
            correlated = (x if correlated is None else correlated) + surgery  # no MLP on this path
            x = x + block.ls_1(original)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            if i + 1 in self.layers:
                taps.extend(self._taps(block, middle, correlated[:, 1:], weights))
        final = correlated[:, 1:] if correlated is not None else x[:, 1:]
        patches = torch.stack([self._project(final if t is None else t) for t in taps], dim=1)
        cls = self.model.ln_post(x[:, 0]) if self.config.embedding_ln_post else x[:, 0]
        return {"patch_tokens": patches, "embedding": cls @ self.model.proj}

    def _taps(
        self, block: Any, middle: torch.Tensor, correlated: torch.Tensor, weights: torch.Tensor | None
    ) -> list[torch.Tensor | None]:
        """The token sets one tapped block gives: E-Attn alone, or D-Attn (and E-Attn on the DINO grid).

        ``None`` stands for the E-Attn tokens after the last block: with ``eattn_taps: final`` an E-Attn tap that
        is not resized, as the release's taps are views of one tensor its later blocks add to in place.
        """
        side = None if weights is None else math.isqrt(weights.shape[-1])
        final = self.config.eattn_taps == "final" and (side is None or side == math.isqrt(correlated.shape[1]))
        eattn = None if final else regrid_tokens(correlated, side or math.isqrt(correlated.shape[1]))
        if weights is None:
            return [eattn]
        dattn = dino_attention(block, middle, weights)
        return [dattn, eattn] if self.config.both_attentions else [dattn]


def refuse_anomalyclip_prompts(path: str) -> None:
    """Refuse AnomalyCLIP's release prompt learner as Crane's: the layouts are the same but for AnomalyCLIP's
    ``compound_prompt_projections``. Other problems with the file are left to AnomalyCLIP's loader to name.

    Raises:
        WeightsError: the file holds ``compound_prompt_projections.*``.
    """
    try:
        _, state = read_weights(path)
    except WeightsError:
        return
    found = sorted(key for key in state if key.startswith("compound_prompt_projections."))
    if found:
        raise WeightsError(
            f"{path!r} is an AnomalyCLIP prompt learner, not Crane's: expected only ctx_pos, ctx_neg, "
            f"compound_prompts_text.N and buffers, found {len(found)} more such as {found[0]}; pass the Crane "
            "release's checkpoints/trained_on_<data>_crane(p)/epoch_N.pth (or load the file into anomalyclip)"
        )


class Crane(AnomalyCLIP):
    """Crane / Crane+ (trainable: AnomalyCLIP's learnable prompts on a frozen CLIP and, for Crane+, a frozen DINO).

    Args:
        config: The configuration.
        name: Registry name recorded in the card.
    """

    config_class = CraneConfig
    config: CraneConfig

    def __init__(self, config: CraneConfig, name: str = "crane") -> None:
        if config.release_prompts is not None:
            refuse_anomalyclip_prompts(config.release_prompts)
        super().__init__(config, name)
        dino: Any = None
        self.dino_info: dict[str, Any] | None = None
        norms: tuple[RGB, ...] = (self.mean, self.std)
        if config.dino_backbone is not None:
            dino, self.dino_info, dino_mean, dino_std = build_frozen_dino(DinoFields(config), name)
            norms = (*norms, dino_mean, dino_std)
        self.vision = CraneVision(self.vision.model, config, dino, norms)  # type: ignore[assignment]

    def forward_head(
        self, features: Mapping[str, torch.Tensor], class_names: list[str]
    ) -> InferenceBatch | TrainingBatch:
        """Score cached features against the prompts (fp32; ``class_names`` only fix the batch size).

        Returns:
            Eval mode: an :class:`InferenceBatch`. Training mode: a :class:`TrainingBatch` whose ``seg_probs`` are
            the per-map [normal, abnormal] probabilities upsampled ``train_interpolation`` ``(B, 2M, S, S)``
            (``aacm_probs`` repeats them) and ``global_logits`` the image logits at ``train_image_temperature``.
        """
        patches = features["patch_tokens"].float()
        if len(class_names) != patches.shape[0]:
            raise ConfigError(f"got {len(class_names)} class names for {patches.shape[0]} images; one per image")
        cfg = self.config
        with torch.autocast(patches.device.type, enabled=False):
            patches = F.normalize(patches, dim=-1)
            embedding = F.normalize(features["embedding"].float(), dim=-1)
            in_prompt = cfg.image_prompt_train if self.training else cfg.image_prompt_eval
            text = self.prompts(embedding).float() if in_prompt else self.prompts().float().expand(len(patches), 2, -1)
            logits = torch.einsum("bmne,bke->bmnk", patches, text) / cfg.temperature
            image = torch.einsum("be,bke->bk", self._image_feature(patches, logits, embedding), text)
            maps = self._maps(logits, cfg.train_interpolation if self.training else "bilinear")
            pixel = self._pixel(maps, logits)
            pixel = head.gaussian_blur(pixel, cfg.smoothing_sigma).clamp(0.0, 1.0)
            scores = policy_image_scores(cfg.image_score, torch.softmax(image / cfg.temperature, dim=-1)[:, 1], pixel)
            if self.training:
                seg = torch.cat(maps, dim=1)
                return TrainingBatch(pixel, scores, seg, seg, image / cfg.train_image_temperature)
            return InferenceBatch(pixel, scores)

    def _image_feature(self, patches: torch.Tensor, logits: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Score-based pooling: the unit mean of the image embedding and of the patch tokens (mean over maps)
        weighted by their abnormal probability (softmax of the mean logits), weighted ``pooling_alpha``."""
        alpha = self.config.pooling_alpha
        weight = torch.softmax(logits.mean(dim=1), dim=-1)[..., 1:]
        pooled = F.normalize((patches.mean(dim=1) * weight).sum(dim=1), dim=-1)
        return F.normalize(alpha * pooled + (1.0 - alpha) * embedding, dim=-1)

    def _maps(self, logits: torch.Tensor, mode: str) -> list[torch.Tensor]:
        """Per map ``(B, 2, S, S)`` softmax [normal, abnormal] probabilities upsampled with ``mode``."""
        return [self._upsample(torch.softmax(logits[:, m], dim=-1), mode) for m in range(logits.shape[1])]

    def _upsample(self, values: torch.Tensor, mode: str) -> torch.Tensor:
        """``(B, N, K)`` values of a square patch grid as ``(B, K, S, S)``."""
        side = math.isqrt(values.shape[1])
        grid = values.transpose(1, 2).reshape(values.shape[0], values.shape[2], side, side)
        return F.interpolate(grid, size=(self.image_size, self.image_size), mode=mode)

    def _pixel(self, maps: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """The abnormal map: mean of the maps' probabilities (``soft_mean``) or softmax of the mean logits."""
        if self.config.soft_mean:
            return torch.stack([m[:, 1] for m in maps]).mean(dim=0)
        mean_logits = torch.stack([self._upsample(logits[:, m], "bilinear") for m in range(logits.shape[1])]).mean(0)
        return torch.softmax(mean_logits, dim=1)[:, 1]

    def compute_loss(
        self, outputs: InferenceBatch | TrainingBatch, masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``seg_loss_weight`` x the sum over maps of focal + dice((p_abn + 1 - p_norm) / 2, mask), plus
        ``image_loss_weight`` x the image cross entropy (the release's training loop).

        Returns:
            ``total`` and the detached terms ``focal``, ``dice``, ``global``.
        """
        outputs = training_outputs(outputs, labels)
        target = prepare_masks(masks, outputs.seg_probs.shape[-1]).squeeze(1)
        focal = dice = outputs.seg_probs.new_zeros(())
        for probs in outputs.seg_probs.split(2, dim=1):
            focal = focal + focal_loss(probs, target)
            dice = dice + dice_loss((probs[:, 1] + 1.0 - probs[:, 0]) / 2.0, target)
        ce = F.cross_entropy(outputs.global_logits, labels.to(masks.device).long())
        total = self.config.seg_loss_weight * (focal + dice) + self.config.image_loss_weight * ce
        return {"total": total, "focal": focal.detach(), "dice": dice.detach(), "global": ce.detach()}

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """AnomalyCLIP's CLIP towers and, for Crane+, the DINO of D-Attn (``dino``)."""
        weights = super().frozen_weights()
        return {**weights, "dino": self.dino_info} if self.dino_info is not None else weights

    def card_extras(self) -> dict[str, Any]:
        """AnomalyCLIP's entries, the E-Attn kind, whether D-Attn is used and the pinned ``epoch``."""
        extras = {"attention": self.config.attention, "dattn": self.dino_info is not None, "epoch": self.config.epoch}
        return {**super().card_extras(), **extras}


@register_factory(Crane)
def crane(**cfg: Any) -> Crane:
    """Build ``crane`` (its catalogue entry: :mod:`medad.models.crane_config`)."""
    return Crane(model_config("crane", CraneConfig, **cfg), name="crane")


@register_factory(Crane)
def crane_tiny(**cfg: Any) -> Crane:
    """Build ``crane_tiny`` (its catalogue entry: :mod:`medad.models.crane_config`)."""
    return Crane(model_config("crane_tiny", CraneConfig, **cfg), name="crane_tiny")


@register_factory(Crane)
def crane_plus(**cfg: Any) -> Crane:
    """Build ``crane_plus`` (its catalogue entry: :mod:`medad.models.crane_config`)."""
    return Crane(model_config("crane_plus", CraneConfig, **cfg), name="crane_plus")


@register_factory(Crane)
def crane_plus_tiny(**cfg: Any) -> Crane:
    """Build ``crane_plus_tiny`` (its catalogue entry: :mod:`medad.models.crane_config`)."""
    return Crane(model_config("crane_plus_tiny", CraneConfig, **cfg), name="crane_plus_tiny")
