"""AnomalyCLIP (Zhou et al., ICLR 2024): object-agnostic learnable text prompts on a frozen CLIP, scored against
the patch tokens of the V-V attention path (DPAM) of the frozen vision tower. Where the paper and the release
differ, the release is followed (see docs/models.md).

Re-derived from the paper and the public description of its MIT release (zqhang/AnomalyCLIP); no code of it is
used. What is trained: two prompt contexts (``[V1..Vn] object`` and ``[W1..Wn] damaged object``, the class word is
always "object") and deep learnable tokens that replace text tokens ``1..t`` at the input of text blocks
``2..depth``. What is frozen: the whole CLIP. The vision tower runs the V-V attention path (diagonally prominent
attention, from CLIP Surgery) in its last ``dpam_layers`` blocks beside the original path: the tapped patch
tokens come from the V-V path, the image embedding from the original one; both go through ``ln_post`` and
``proj``. Since nothing of the vision side is trained, its output is cached like AD-DINOv3's features.

Map of one layer: softmax over [normal, abnormal] of cosine similarities / 0.07, upsampled bilinearly; the pixel
map is the mean over the tapped layers of ``(p_abn + 1 - p_norm) / 2``, smoothed with a Gaussian (sigma 4, with
the reflected borders of the release's ``scipy.ndimage.gaussian_filter``).
Image score: the abnormal softmax probability of the image embedding against the two text embeddings. Loss: per
layer focal + dice(abnormal, mask) + dice(normal, 1 - mask), weighted 4, plus the cross entropy of the image
logits.

The release's scripts use only the layer-24 map since 2025-04-13 (a bug had made the intermediate maps
identical); that is the default (``layers=(24,)``); the paper's layers 6/12/18/24 are ``layers=PAPER_LAYERS``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models import head
from medad.models.anomalyclip_config import AnomalyCLIPConfig
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
from medad.models.registry import model_config, register_factory
from medad.models.weights import check_weights_path
from medad.models.weights_files import read_weights
from medad.utils.io import sha256_file

SEG_LOSS_WEIGHT = 4.0
"""Weight of the map terms against the image cross entropy (the release's ``lam``)."""


def dual_attention(block: Any, x: torch.Tensor, kind: str = "vv") -> tuple[torch.Tensor, torch.Tensor]:
    """One block's attention on ``ln_1(x)`` both ways, each through the block's output projection: the original
    q-k path and the self-correlation path, the sum over ``kind``'s pairs (``vv``: AnomalyCLIP's V-V path;
    ``qq+kk+vv``: Crane's E-Attn) of ``softmax(a a^T / sqrt(d)) v``."""
    attn = block.attn
    y = block.ln_1(x)
    batch, n, width = y.shape
    heads = attn.num_heads
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).reshape(batch, n, 3, heads, width // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    by_name = {"q": q, "k": k, "v": v}
    correlated = sum(F.scaled_dot_product_attention(by_name[p[0]], by_name[p[0]], v) for p in kind.split("+"))

    def merge(out: torch.Tensor) -> torch.Tensor:
        return attn.out_proj(out.transpose(1, 2).reshape(batch, n, width))

    return merge(F.scaled_dot_product_attention(q, k, v)), merge(torch.as_tensor(correlated))


class DPAMVision(nn.Module):
    """The frozen CLIP vision tower with the V-V path in its last ``dpam_layers`` blocks (AnomalyCLIP's DPAM).

    Args:
        model: open_clip's ``VisionTransformer`` (:func:`~medad.models.clip_vision.build_frozen_clip_vision`).
        layers: 1-based tapped blocks.
        dpam_layers: How many of the last blocks run the V-V path too.
        embedding_ln_post: ``ln_post`` on the CLS token of the image embedding (the release leaves it out).
    """

    model: Any

    def __init__(self, model: nn.Module, layers: tuple[int, ...], dpam_layers: int, embedding_ln_post: bool) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.layers = layers
        self.embedding_ln_post = embedding_ln_post
        self.start = len(self.model.transformer.resblocks) - dpam_layers

    def train(self, mode: bool = True) -> DPAMVision:
        """Keep the frozen tower in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.ln_post(tokens) @ self.model.proj

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        """``patch_tokens`` ``(B, L, N, E)``: projected patch tokens of the tapped blocks (V-V path in the DPAM
        blocks); ``embedding`` ``(B, E)``: the projected CLS token of the original path (through ``ln_post`` only
        with ``embedding_ln_post``, as CLIP's image embedding)."""
        x = self.model._embeds(images)
        vv: torch.Tensor | None = None
        taps = []
        for i, block in enumerate(self.model.transformer.resblocks):
            if i >= self.start:
                original, surgery = dual_attention(block, x)
                vv = (x if vv is None else vv) + surgery  # the V-V path keeps no MLP
                x = x + block.ls_1(original)
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            else:
                x = block(x)
            if i + 1 in self.layers:
                taps.append(x if vv is None else vv)
        patches = torch.stack([self._project(t[:, 1:]) for t in taps], dim=1)
        cls = self.model.ln_post(x[:, 0]) if self.embedding_ln_post else x[:, 0]
        return {"patch_tokens": patches, "embedding": cls @ self.model.proj}


class PromptLearner(nn.Module):
    """The trained part: two prompt contexts and the deep text tokens, encoded by the frozen text tower.

    Args:
        tower: open_clip's frozen ``TextTransformer``.
        tokens: ``(2, T)`` token ids of ``"X..X object."`` and ``"X..X damaged object."`` (``n_ctx`` X each).
        n_ctx: Context tokens per prompt.
        text_ctx: Deep tokens per text block.
        text_depth: Deep tokens are used in blocks ``2..text_depth``.
        deep_fp16: Round the deep tokens to float16 where they enter a block (the release's ``.half()``).
    """

    tokens: torch.Tensor

    def __init__(
        self, tower: Any, tokens: torch.Tensor, n_ctx: int, text_ctx: int, text_depth: int, deep_fp16: bool = True
    ) -> None:
        super().__init__()
        self.deep_fp16 = deep_fp16
        self.tower = [tower]  # frozen and owned by the model: kept out of this module's state dict
        width = int(tower.token_embedding.weight.shape[1])
        self.n_ctx, self.text_ctx = n_ctx, text_ctx
        self.register_buffer("tokens", tokens, persistent=False)
        self.ctx_normal = nn.Parameter(torch.randn(n_ctx, width) * 0.02)
        self.ctx_abnormal = nn.Parameter(torch.randn(n_ctx, width) * 0.02)
        self.deep = nn.ParameterList(nn.Parameter(torch.randn(text_ctx, width) * 0.02) for _ in range(text_depth - 1))

    def forward(self, image: torch.Tensor | None = None) -> torch.Tensor:
        """``(2, E)`` unit [normal, abnormal] text embeddings; with ``image`` ``(B, W)`` (Crane's context-guided
        prompts, the release's ``pad_suffix``) each image's embedding is one more token right after the context
        (the last padding token drops out): ``(B, 2, E)``."""
        tower: Any = self.tower[0]
        x, eot = self._assemble(tower, image)
        x = x + tower.positional_embedding
        for i, block in enumerate(tower.transformer.resblocks):
            if 1 <= i <= len(self.deep):
                deep = self.deep[i - 1].half() if self.deep_fp16 else self.deep[i - 1]
                deep = deep.to(x.dtype).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], deep, x[:, 1 + self.text_ctx :]], dim=1)
            x = block(x, attn_mask=tower.attn_mask)
        x = tower.ln_final(x)
        pooled = F.normalize(x[torch.arange(x.shape[0], device=x.device), eot] @ tower.text_projection, dim=-1)
        return pooled if image is None else pooled.reshape(image.shape[0], 2, -1)

    def _assemble(self, tower: Any, image: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt token embeddings ``(P, T, W)`` and the position of each one's end token."""
        embedded = tower.token_embedding(self.tokens)
        ctx = torch.stack([self.ctx_normal, self.ctx_abnormal]).to(embedded.dtype)
        prefix, suffix = embedded[:, :1], embedded[:, 1 + self.n_ctx :]
        if image is None:
            return torch.cat([prefix, ctx, suffix], dim=1), self.tokens.argmax(dim=-1)
        batch = image.shape[0]

        def each(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(0).expand(batch, *t.shape)

        token = image.to(embedded.dtype)[:, None, None, :].expand(batch, 2, 1, -1)
        x = torch.cat([each(prefix), each(ctx), token, each(suffix[:, :-1])], dim=2).flatten(0, 1)
        return x, (self.tokens.argmax(dim=-1) + 1).repeat(batch)


RELEASE_KEYS = {"ctx_pos": "prompts.ctx_normal", "ctx_neg": "prompts.ctx_abnormal"}
"""The release's prompt-learner tensors and medad's names (its deep tokens ``compound_prompts_text.i`` are
``prompts.deep.i``; its ``compound_prompt_projections`` are never used by its forward and are not read)."""


def read_release_prompts(
    path: str | os.PathLike[str], tokens: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained prompts of the release's prompt-learner checkpoint, under medad's names.

    The file is ``torch.save({"prompt_learner": state_dict})`` (or its safetensors copy written by ``medad weights
    convert``): ``ctx_pos`` / ``ctx_neg`` ``(1, 1, n_ctx, W)``,
    ``compound_prompts_text.i`` ``(t, W)``, and the prompts it was built for (``tokenized_prompts_pos`` / ``_neg``
    ``(1, 1, T)``), which must be this model's ``X..X object.`` / ``X..X damaged object.``.

    Args:
        path: The ``.pth`` file.
        tokens: ``(2, T)`` this model's prompt token ids.

    Returns:
        The state for :meth:`AnomalyCLIP.load_trainable_state_dict` and ``{file, sha256}``.

    Raises:
        WeightsError: not a readable checkpoint, not an AnomalyCLIP prompt learner (naming the keys expected and
            found), or built for other prompts.
    """
    file = check_weights_path(path, "AnomalyCLIP prompt")
    _, state = read_weights(file)  # the release's pickle, or its safetensors copy (`medad weights convert`)
    wanted = [*RELEASE_KEYS, "tokenized_prompts_pos", "tokenized_prompts_neg"]
    if any(k not in state for k in wanted):
        raise WeightsError(
            f"{str(file)!r} is not an AnomalyCLIP prompt learner: expected {{'prompt_learner': {{{', '.join(wanted)}, "
            f"compound_prompts_text.N}}}}, found {sorted(state)[:6]}; pass the release's checkpoints/.../epoch_N.pth"
        )
    built_for = torch.stack([state["tokenized_prompts_pos"].reshape(-1), state["tokenized_prompts_neg"].reshape(-1)])
    if built_for.shape != tokens.shape or not torch.equal(built_for.to(tokens.dtype), tokens.cpu()):
        raise WeightsError(
            f"{str(file)!r} was trained for other prompts than this model's: its ctx_pos is "
            f"{tuple(state['ctx_pos'].shape)} ({state['ctx_pos'].shape[-2]} context tokens), this model has "
            f"{int((tokens[0] == tokens[0, 1]).sum())}; build the model with the file's n_ctx (the release: 12)"
        )
    out = {medad: state[key].reshape(state[key].shape[-2:]).float() for key, medad in RELEASE_KEYS.items()}
    deep = sorted((k for k in state if k.startswith("compound_prompts_text.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    out.update({f"prompts.deep.{k.rsplit('.', 1)[1]}": state[k].float() for k in deep})
    return out, {"file": str(file), "sha256": sha256_file(file)}


class AnomalyCLIP(TrainableAnomalyModel):
    """AnomalyCLIP (trainable: learnable prompts on a frozen CLIP).

    Args:
        config: The configuration.
        name: Registry name recorded in the card.
    """

    config_class = AnomalyCLIPConfig
    trained_weights: ClassVar[str] = "prompt weights"
    card_shape: ClassVar[str] = "n_ctx, text_ctx, text_depth"
    config: AnomalyCLIPConfig

    def __init__(self, config: AnomalyCLIPConfig, name: str = "anomalyclip") -> None:
        self.check_config(config)
        super().__init__(config, name)
        self.layers = tuple(config.layers)
        fields = ClipVisionFields.of(config, config.layers)
        tower, self.vision_info, self.mean, self.std = build_frozen_clip_vision(fields)
        self.vision = DPAMVision(tower, self.layers, config.dpam_layers, config.embedding_ln_post)
        text: Any
        text, self.text_info, tokenizer = build_frozen_clip_text(config)
        self.text_tower = text
        context = " ".join(["X"] * config.n_ctx)
        tokens = tokenizer([f"{context} object.", f"{context} damaged object."])
        tokens = tokens[:, : int(text.positional_embedding.shape[0])]
        self.prompts = PromptLearner(
            text, tokens, config.n_ctx, config.text_ctx, config.text_depth, config.deep_tokens_fp16
        )
        self.release_info: dict[str, Any] | None = None
        if config.release_prompts is not None:
            state, self.release_info = read_release_prompts(config.release_prompts, tokens)
            self.load_trainable_state_dict(state)

    def train(self, mode: bool = True) -> AnomalyCLIP:
        """Set the prompts' mode; both frozen towers always stay in eval mode."""
        super().train(mode)
        self.vision.train(False)
        self.text_tower.train(False)
        return self

    def forward_features(self, images: torch.Tensor) -> Features:
        """Run the frozen vision tower with its V-V path (no grad; cacheable): see :class:`DPAMVision`."""
        self.check_images(images)
        return self.vision(images)

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """Few-shot memory features: the frozen CLIP tower's own residual-stream patch tokens at the tapped layers
        (:func:`~medad.models.clip_vision.frozen_patch_grids`; not the DPAM / E-Attn tokens scored against the
        prompts), the memory of AnomalyCLIP+ in AdaptCLIP's few-shot tables and of AF-CLIP. Crane and Crane+
        inherit it (Crane+'s DINO only re-weights attention, so its memory is CLIP's too). ``class_names`` is
        unused."""
        self.check_images(images)
        return frozen_patch_grids(self.vision.model, images, self.layers)

    def forward_head(
        self, features: Mapping[str, torch.Tensor], class_names: list[str]
    ) -> InferenceBatch | TrainingBatch:
        """Score cached features against the learned prompts (fp32; ``class_names`` only fix the batch size: the
        prompts are object-agnostic).

        Returns:
            Eval mode: an :class:`InferenceBatch`. Training mode: a :class:`TrainingBatch` whose ``seg_probs`` are
            the per-layer [normal, abnormal] maps stacked on the channel axis ``(B, 2L, S, S)`` (``aacm_probs``
            repeats them: AnomalyCLIP has no second map) and ``global_logits`` the image logits ``(B, 2)``.
        """
        patches = features["patch_tokens"].float()
        if len(class_names) != patches.shape[0]:
            raise ConfigError(f"got {len(class_names)} class names for {patches.shape[0]} images; one per image")
        with torch.autocast(patches.device.type, enabled=False):
            text = self.prompts().float()
            logits = F.normalize(features["embedding"].float(), dim=-1) @ text.T / self.config.temperature
            maps = [self._layer_map(patches[:, i], text) for i in range(len(self.layers))]
            anomaly = torch.stack([(m[:, 1] + 1.0 - m[:, 0]) / 2.0 for m in maps]).mean(dim=0)
            pixel = head.gaussian_blur(anomaly, self.config.smoothing_sigma, edge="reflect").clamp(0.0, 1.0)
            image = policy_image_scores(self.config.image_score, torch.softmax(logits, dim=-1)[:, 1], pixel)
            if self.training:
                seg = torch.cat(maps, dim=1)
                return TrainingBatch(pixel, image, seg, seg, logits)
            return InferenceBatch(pixel, image)

    def _layer_map(self, patches: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``(B, 2, S, S)`` softmax [normal, abnormal] map of one layer's ``(B, N, E)`` patch tokens."""
        probs = torch.softmax(F.normalize(patches, dim=-1) @ text.T / self.config.temperature, dim=-1)
        side = math.isqrt(probs.shape[1])
        grid = probs.transpose(1, 2).reshape(probs.shape[0], 2, side, side)
        return F.interpolate(grid, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def compute_loss(
        self, outputs: InferenceBatch | TrainingBatch, masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """4 x the sum over layers of focal + dice(abnormal, mask) + dice(normal, 1 - mask), plus the image cross
        entropy (as the release's training loop).

        Returns:
            ``total`` and the detached terms ``focal``, ``dice``, ``global``.
        """
        outputs = training_outputs(outputs, labels)
        target = prepare_masks(masks, outputs.seg_probs.shape[-1]).squeeze(1)
        focal = dice = outputs.seg_probs.new_zeros(())  # the release weighs the map terms by 4 (``lam``)
        for probs in outputs.seg_probs.split(2, dim=1):
            focal = focal + focal_loss(probs, target)
            dice = dice + dice_loss(probs[:, 1], target) + dice_loss(probs[:, 0], 1.0 - target)
        ce = F.cross_entropy(outputs.global_logits, labels.to(masks.device).long())
        total = SEG_LOSS_WEIGHT * (focal + dice) + ce
        return {"total": total, "focal": focal.detach(), "dice": dice.detach(), "global": ce.detach()}

    def trainable_modules(self) -> nn.ModuleDict:
        """The prompt contexts and deep text tokens, the only trained parameters."""
        return nn.ModuleDict({"prompts": self.prompts})

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen CLIP vision tower (``backbone``) and text tower (``text``), both read from the CLIP file."""
        return {"backbone": self.vision_info, "text": self.text_info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The vision tower's forward with its V-V path (all the frozen work)."""
        return [(self.vision, "forward")]

    def card_extras(self) -> dict[str, Any]:
        """``compat``, the tapped ``layers``, the DPAM depth and the release prompts read (file, sha256)."""
        extras = {"compat": self.compat, "layers": list(self.layers), "dpam_layers": self.config.dpam_layers}
        return {**extras, "release_prompts": self.release_info}



@register_factory(AnomalyCLIP)
def anomalyclip(**cfg: Any) -> AnomalyCLIP:
    """Build ``anomalyclip`` (its catalogue entry: :mod:`medad.models.anomalyclip_config`)."""
    return AnomalyCLIP(model_config("anomalyclip", AnomalyCLIPConfig, **cfg), name="anomalyclip")


@register_factory(AnomalyCLIP)
def anomalyclip_tiny(**cfg: Any) -> AnomalyCLIP:
    """Build ``anomalyclip_tiny`` (its catalogue entry: :mod:`medad.models.anomalyclip_config`)."""
    return AnomalyCLIP(model_config("anomalyclip_tiny", AnomalyCLIPConfig, **cfg), name="anomalyclip_tiny")


@register_factory(AnomalyCLIP)
def anomalyclip_paper(**cfg: Any) -> AnomalyCLIP:
    """Build ``anomalyclip_paper`` (its catalogue entry: :mod:`medad.models.anomalyclip_config`)."""
    return AnomalyCLIP(model_config("anomalyclip_paper", AnomalyCLIPConfig, **cfg), name="anomalyclip_paper")


@register_factory(AnomalyCLIP)
def anomalyclip_paper_tiny(**cfg: Any) -> AnomalyCLIP:
    """Build ``anomalyclip_paper_tiny`` (its catalogue entry: :mod:`medad.models.anomalyclip_config`)."""
    return AnomalyCLIP(model_config("anomalyclip_paper_tiny", AnomalyCLIPConfig, **cfg), name="anomalyclip_paper_tiny")
