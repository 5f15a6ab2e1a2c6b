"""AA-CLIP (Ma et al., CVPR 2025): anomaly-aware text anchors and patch features from norm-preserving residual
adapters on a frozen CLIP, trained in two stages. Where the paper and the release differ, the release is followed
(see docs/models.md).

Re-derived from the paper and the public description of its Apache-2.0 release (Mwxinnn/AA-CLIP); no code of it is
used. The model owns its two-stage schedule; the training loop only tells it the epoch (:meth:`AAClip.set_epoch`):

* Stage 1 (epochs ``0 .. text_epochs - 1``): residual adapters after the first ``text_adapt_until`` text blocks
  and a projection of the EOT token replace CLIP's text projection. Each adapter's output is re-scaled to the
  norm of its input and mixed as ``x <- w * a + (1 - w) * x``. The text is scored against frozen patch features
  (CLIP: the V-V attention path of the last ``surgery_layers`` blocks, projected, unit-normalised, plus the unit
  image embedding); loss: focal + dice(abnormal, mask) + dice(normal, 1 - mask) of the maps plus
  ``orthogonal_weight * (mean over the batch of <t_normal, t_abnormal>)^2``.
* Stage 2 (later epochs): the text side is frozen; residual adapters (same mixing) after the first
  ``image_adapt_until`` vision blocks, a projection per tapped level and a detection projection (mean of the unit
  projected tokens of the last level). Loss: cross entropy of the detection logits plus the map terms of every
  level.

Text anchors: the state x template ensemble of the release (3 normal and 5 abnormal states, 2 templates) with the
class word of each image. Maps: cosine similarities x 100. Test map of a level: ``(s_abn + 1 - s_norm) / 2`` of the
scaled similarities, blurred on the patch grid with a domain-dependent Gaussian (industrial sigma 1 / 7 taps,
medical sigma 1.5 / 9 taps: ``domain``, recorded in the card), upsampled, summed over the levels. medad returns
``1/2 + sum_l blur(c_abn - c_norm) / (4 L)``, the release's map under a positive affine map (the same ranking and
metrics), so that it lies in [0, 1].

``aa_clip_dinov3`` is the same recipe on medad's frozen DINOv3 with the CLIP text tower. DINOv3 has no frozen
text-aligned path, so its stage 1 scores the text against the last tapped level's frozen final-norm tokens
through that level's projection, trained in stage 1 beside the text adapters (medad's choice; no release).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models.aa_clip_config import BLURS, AAClipConfig, AAClipDinoConfig
from medad.models.base import (
    Features,
    InferenceBatch,
    TrainableAnomalyModel,
    TrainingBatch,
    patch_grids,
    policy_image_scores,
    training_outputs,
)
from medad.models.clip_vision import (
    ClipVisionFields,
    build_frozen_clip_text,
    build_frozen_clip_vision,
    frozen_patch_grids,
)
from medad.models.dinov3 import build_frozen_dino
from medad.models.losses import dice_loss, focal_loss, prepare_masks
from medad.models.registry import model_config, register_factory
from medad.models.weights import check_weights_path, text_model_config
from medad.utils.io import sha256_file

NORMAL_STATES = ("{}", "a {}", "the {}")
ABNORMAL_STATES = ("a damaged {}", "a broken {}", "a {} with flaw", "a {} with defect", "a {} with damage")
TEMPLATES = ("{}.", "a photo of {}.")
"""The release's prompt ensemble: every state in every template, one class word per image."""

SCALE = 100.0
"""Multiplies the cosine similarities (the release's fixed logit scale)."""

class SimpleAdapter(nn.Module):
    """``Linear(c_in, c_out, bias=False)``, then LeakyReLU when ``relu`` (the release's adapter / projection)."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out, bias=False)
        self.relu = relu
        nn.init.xavier_uniform_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projected tokens."""
        y = self.fc(x)
        return F.leaky_relu(y) if self.relu else y


def residual_adapt(adapter: nn.Module, x: torch.Tensor, weight: float) -> torch.Tensor:
    """``w * a + (1 - w) * x`` with ``a = adapter(x)`` re-scaled to the per-token norm of ``x``."""
    a = adapter(x)
    a = a * x.norm(dim=-1, keepdim=True) / a.norm(dim=-1, keepdim=True)
    return weight * a + (1.0 - weight) * x


def vv_attention(block: Any, x: torch.Tensor, over_batch: bool) -> torch.Tensor:
    """The V-V path of one open_clip block's attention on ``ln_1(x)`` (v as query, key and value), through its
    output projection; ``over_batch`` attends over the images of the batch at each token instead."""
    attn = block.attn
    y = block.ln_1(x)
    if over_batch:
        y = y.transpose(0, 1)
    batch, n, width = y.shape
    heads = attn.num_heads
    v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)[..., 2 * width :]
    v = v.reshape(batch, n, heads, width // heads).transpose(1, 2)
    out = attn.out_proj(F.scaled_dot_product_attention(v, v, v).transpose(1, 2).reshape(batch, n, width))
    return out.transpose(0, 1) if over_batch else out


class ClipTower(nn.Module):
    """The frozen CLIP vision tower seen block by block (``embed``, ``block``, ``finish``) and its stage-1 features.

    Args:
        model: open_clip's ``VisionTransformer``.
        surgery_layers: Last blocks on the V-V path in the stage-1 features.
        over_batch: The release's V-V attention over the images of a batch.
    """

    model: Any
    projected_stage1 = True

    def __init__(self, model: nn.Module, surgery_layers: int, over_batch: bool) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.blocks = list(self.model.transformer.resblocks)
        self.start = len(self.blocks) - surgery_layers
        self.over_batch = over_batch
        self.width = int(self.model.transformer.width)

    def train(self, mode: bool = True) -> ClipTower:
        """Keep the frozen tower in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N, W)`` tokens entering the first block."""
        return self.model._embeds(images)

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``i`` (0-based) on ``x``."""
        return self.blocks[i](x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """``ln_post`` of the patch tokens of a tapped stream."""
        return self.model.ln_post(x[:, 1:])

    def stage1(self, images: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
        """``(B, L, N, E)`` frozen stage-1 patch features: the V-V path's tokens at ``levels``, projected, unit,
        plus the unit CLIP image embedding (of the original path)."""
        x = vv = self.embed(images)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= self.start:
                vv = vv + block.ls_1(vv_attention(block, vv, self.over_batch))
                vv = vv + block.ls_2(block.mlp(block.ln_2(vv)))
            else:
                vv = x
            if i + 1 in levels:
                taps.append(vv)
        image = F.normalize(self.model.ln_post(x[:, 0]) @ self.model.proj, dim=-1)
        return torch.stack([F.normalize(self.finish(t) @ self.model.proj, dim=-1) + image[:, None] for t in taps], 1)


class DinoTower(nn.Module):
    """The frozen timm DINOv3 seen block by block; its stage-1 features are the final-norm tokens at ``levels``."""

    model: Any
    projected_stage1 = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.blocks = list(self.model.blocks)
        self.width = int(self.model.embed_dim)

    def train(self, mode: bool = True) -> DinoTower:
        """Keep the frozen backbone in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, P + N, W)`` tokens entering the first block (P prefix tokens: CLS and registers)."""
        x, _ = self.model._pos_embed(self.model.patch_embed(images))
        return self.model.norm_pre(x)

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``i`` (0-based) with the model's rotary embedding."""
        rope = self.model.rope.get_embed() if self.model.rope is not None else None
        if rope is not None and getattr(self.model, "rope_mixed", False):
            rope = rope[i]
        return self.blocks[i](x, rope=rope)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm of the patch tokens (prefix tokens dropped)."""
        return self.model.norm(x)[:, self.model.num_prefix_tokens :]

    def stage1(self, images: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
        """``(B, L, N, W)`` final-norm patch tokens of the frozen backbone at ``levels``."""
        x, taps = self.embed(images), []
        for i in range(len(self.blocks)):
            x = self.block(i, x)
            if i + 1 in levels:
                taps.append(self.finish(x))
        return torch.stack(taps, 1)


class AdaptedText(nn.Module):
    """The CLIP text tower with residual adapters after its first blocks and a trained EOT projection.

    Args:
        tower: open_clip's frozen ``TextTransformer`` (kept out of this module's state dict).
        until: Blocks followed by an adapter.
        weight: Share of the adapter output in the mixing.
        embed_dim: Output width.
    """

    def __init__(self, tower: Any, until: int, weight: float, embed_dim: int) -> None:
        super().__init__()
        self.tower = [tower]
        width = int(tower.token_embedding.weight.shape[1])
        self.weight = weight
        self.adapters = nn.ModuleList(SimpleAdapter(width, width) for _ in range(until))
        self.proj = SimpleAdapter(width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(S, E)`` embeddings (not normalised) of ``(S, T)`` token ids."""
        tower: Any = self.tower[0]
        x = tower.token_embedding(tokens) + tower.positional_embedding
        for i, block in enumerate(tower.transformer.resblocks):
            x = block(x, attn_mask=tower.attn_mask)
            if i < len(self.adapters):
                x = residual_adapt(self.adapters[i], x, self.weight)
        x = tower.ln_final(x)
        return self.proj(x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)])


def prompt_sentences(word: str) -> tuple[list[str], list[str]]:
    """The release's normal and abnormal sentences of a class word (each state in each template)."""
    normal = [t.format(s.format(word)) for s in NORMAL_STATES for t in TEMPLATES]
    abnormal = [t.format(s.format(word)) for s in ABNORMAL_STATES for t in TEMPLATES]
    return normal, abnormal


def level_probs(patches: torch.Tensor, text: torch.Tensor, size: int) -> torch.Tensor:
    """Training map of one level: ``(B, 2, S, S)`` softmax of the upsampled scaled similarities of unit
    ``(B, N, E)`` patch features with ``(B, E, 2)`` anchors."""
    scores = SCALE * patches @ text
    side = math.isqrt(scores.shape[1])
    grid = scores.transpose(1, 2).reshape(scores.shape[0], 2, side, side)
    return torch.softmax(F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True), dim=1)


def grid_blur(grid: torch.Tensor, sigma: float, taps: int) -> torch.Tensor:
    """Gaussian blur of ``(B, 1, g, g)`` maps with ``taps`` taps and reflected borders (kornia's default)."""
    x = torch.arange(taps, dtype=grid.dtype, device=grid.device) - (taps - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    pad = taps // 2
    out = F.pad(grid, (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, taps))
    return F.conv2d(out, kernel.view(1, 1, taps, 1))


def scoring_map(patches: torch.Tensor, text: torch.Tensor, size: int, sigma: float, taps: int) -> torch.Tensor:
    """``(B, S, S)`` blurred, upsampled ``c_abn - c_norm`` of unit ``(B, N, E)`` patches with ``(B, E, 2)`` anchors."""
    diff = patches @ (text[..., 1:] - text[..., :1])
    side = math.isqrt(diff.shape[1])
    grid = grid_blur(diff.transpose(1, 2).reshape(diff.shape[0], 1, side, side), sigma, taps)
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[:, 0]


RELEASE_FILES = {"text": "text_adapter", "image": "image_adapter"}
"""The key under which each release checkpoint holds its state dict (beside ``epoch`` and the optimiser)."""


def _release_state(path: str, part: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict of one release checkpoint and ``{file, sha256, epoch}``."""
    key = RELEASE_FILES[part]
    file = check_weights_path(path, f"AA-CLIP {part} adapter")
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors come as many types
        raise WeightsError(f"{str(file)!r} is not a readable torch checkpoint ({exc}); download it again") from exc
    state = loaded.get(key) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        found = sorted(loaded)[:6] if isinstance(loaded, dict) else type(loaded).__name__
        raise WeightsError(
            f"{str(file)!r} is not an AA-CLIP {part} adapter checkpoint: expected {{'{key}': {{...}}, 'epoch': N}}, "
            f"found {found}; pass the release's {key}.pth"
        )
    epoch = loaded.get("epoch")
    return dict(state), {"file": str(file), "sha256": sha256_file(file), "epoch": epoch}


def read_release_adapters(text_path: str, image_path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained adapters of a release run under medad's names.

    The release saves ``text_adapter.pth`` (``{"epoch", "text_adapter", "text_optimizer"}``: ``N.fc.0.weight``, the
    last ``N`` being the EOT projection) and ``image_adapter[_N].pth`` (``{"epoch", "image_adapter",
    "image_optimizer"}``: ``layer_adapters.i.fc.0.weight``, ``seg_proj.i.fc[.0].weight``, ``det_proj.fc[.0].weight``;
    ``.0`` with ``--relu``). Shapes are checked when the state is loaded into the model.

    Returns:
        The state for :meth:`AAClip.load_trainable_state_dict` and ``{text: {file, sha256, epoch}, image: ...}``.
    """
    text, text_info = _release_state(text_path, "text")
    image, image_info = _release_state(image_path, "image")
    out: dict[str, torch.Tensor] = {}
    indices = sorted(int(k.split(".")[0]) for k in text if k.split(".")[0].isdigit())
    for k, v in text.items():
        head, _, rest = k.partition(".")
        if not head.isdigit() or rest != "fc.0.weight":
            raise WeightsError(f"{text_path!r}: unexpected text adapter tensor {k!r}; expected N.fc.0.weight")
        out["text.proj.fc.weight" if int(head) == indices[-1] else f"text.adapters.{head}.fc.weight"] = v.float()
    for k, v in image.items():
        out[k.replace(".fc.0.weight", ".fc.weight")] = v.float()
    relu = any(k.startswith("seg_proj.") and ".fc.0." in k for k in image)
    return out, {"text": text_info, "image": image_info, "relu": relu}


class AAClip(TrainableAnomalyModel):
    """AA-CLIP (trainable: residual text and vision adapters and projections on a frozen CLIP or DINOv3).

    Args:
        config: The configuration (:class:`AAClipDinoConfig` puts the recipe on DINOv3).
        name: Registry name recorded in the card.
    """

    config_class = AAClipConfig
    trained_weights: ClassVar[str] = "adapter weights"
    card_shape: ClassVar[str] = "levels, text_adapt_until, image_adapt_until, CLIP / backbone"
    config: AAClipConfig

    def __init__(self, config: AAClipConfig, name: str = "aa_clip") -> None:
        self.check_config(config)
        super().__init__(config, name)
        self.levels = tuple(config.levels)
        self.vision: ClipTower | DinoTower
        if isinstance(config, AAClipDinoConfig):
            vit, self.vision_info, self.mean, self.std = build_frozen_dino(config, name)
            self.vision = DinoTower(vit)
        else:
            fields = ClipVisionFields.of(config, config.levels)
            tower, self.vision_info, self.mean, self.std = build_frozen_clip_vision(fields)
            self.vision = ClipTower(tower, config.surgery_layers, config.surgery_attention == "batch")
        text: Any
        text, self.text_info, self.tokenizer = build_frozen_clip_text(config)
        self.text_tower = text
        self.context = int(text.positional_embedding.shape[0])
        embed_dim = int(text_model_config(config.clip_model, config.clip_overrides)["embed_dim"])
        self.text = AdaptedText(text, config.text_adapt_until, config.text_adapt_weight, embed_dim)
        width = self.vision.width
        self.layer_adapters = nn.ModuleList(SimpleAdapter(width, width) for _ in range(config.image_adapt_until))
        self.seg_proj = nn.ModuleList(SimpleAdapter(width, embed_dim, config.relu) for _ in self.levels)
        self.det_proj = SimpleAdapter(width, embed_dim, config.relu)
        self.stage = "text" if config.text_epochs > 0 else "image"
        self._anchors: torch.Tensor | None = None  # stage 1's anchors of the last training forward (for the loss)
        self.release_info: dict[str, Any] | None = None
        if config.release_text_adapter is not None and config.release_image_adapter is not None:
            state, self.release_info = read_release_adapters(config.release_text_adapter, config.release_image_adapter)
            if self.release_info["relu"] != config.relu:
                raise WeightsError(
                    f"{config.release_image_adapter!r} was trained with relu={self.release_info['relu']} (the "
                    f"release's --relu), this model has relu={config.relu}; build it with "
                    f"relu={self.release_info['relu']}"
                )
            self.load_trainable_state_dict(state)
            self.mark_adapters_trained()

    def set_epoch(self, epoch: int) -> None:
        """Pick the stage of a 0-based training epoch: text adapters before ``text_epochs``, vision after."""
        self.stage = "text" if epoch < self.config.text_epochs else "image"

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The vision side at ``lr``, the text side at ``lr * text_lr_scale`` (the release's two stage rates)."""
        text = list(self.text.parameters())
        vision = [p for n, p in self.trainable_modules().named_parameters() if not n.startswith("text.")]
        return [{"params": vision, "lr": lr}, {"params": text, "lr": lr * self.config.text_lr_scale}]

    def train(self, mode: bool = True) -> AAClip:
        """Set the adapters' mode; both frozen towers always stay in eval mode."""
        super().train(mode)
        self.vision.train(False)
        self.text_tower.train(False)
        return self

    def forward_features(self, images: torch.Tensor) -> Features:
        """The frozen work (no grad; cacheable): ``embeddings`` ``(B, T, W)`` entering the first vision block and,
        in training mode with a stage 1, ``stage1`` ``(B, L1, N, D)`` the frozen patch features stage 1 scores."""
        self.check_images(images)
        with torch.no_grad():
            out = {"embeddings": self.vision.embed(images)}
            if self.training and self.config.text_epochs > 0:
                out["stage1"] = self.vision.stage1(images, self._stage1_levels())
        return out

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """Few-shot memory features: the frozen tower's own tokens at the tapped levels, not the adapted ones (the
        adapters are trained to align patches with text anchors): CLIP's residual-stream patch tokens
        (:func:`~medad.models.clip_vision.frozen_patch_grids`, AF-CLIP's raw-token memory) or, on DINOv3, its
        final-norm patch tokens (AnomalyDINO's). ``class_names`` is unused."""
        self.check_images(images)
        if isinstance(self.vision, DinoTower):
            with torch.no_grad():
                return patch_grids(self.vision.stage1(images, self.levels), self.levels)
        return frozen_patch_grids(self.vision.model, images, self.levels)

    def _stage1_levels(self) -> tuple[int, ...]:
        return self.levels if self.config.stage1_levels == "all" else self.levels[-1:]

    def anchors(self, class_names: list[str], device: torch.device) -> torch.Tensor:
        """``(B, E, 2)`` unit [normal, abnormal] text anchors of one class word per image (ensemble means)."""
        words = sorted(set(class_names))
        sentences = [s for w in words for pair in prompt_sentences(w) for s in pair]
        tokens = self.tokenizer(sentences)[:, : self.context].to(device)
        emb = F.normalize(self.text(tokens), dim=-1)
        n_norm, n_abn = len(NORMAL_STATES) * len(TEMPLATES), len(ABNORMAL_STATES) * len(TEMPLATES)
        per_word = emb.reshape(len(words), n_norm + n_abn, -1)
        normal = F.normalize(per_word[:, :n_norm].mean(dim=1), dim=-1)
        abnormal = F.normalize(per_word[:, n_norm:].mean(dim=1), dim=-1)
        table = torch.stack([normal, abnormal], dim=-1)
        return table[[words.index(w) for w in class_names]]

    def adapted_tokens(self, embeddings: torch.Tensor) -> list[torch.Tensor]:
        """The vision blocks with the residual adapters: ``(B, N, W)`` finished patch tokens of every level."""
        x, taps = embeddings, []
        for i in range(max(self.levels)):
            x = self.vision.block(i, x)
            if i < len(self.layer_adapters):
                x = residual_adapt(self.layer_adapters[i], x, self.config.image_adapt_weight)
            if i + 1 in self.levels:
                taps.append(self.vision.finish(x))
        return taps

    def forward_head(
        self, features: Mapping[str, torch.Tensor], class_names: list[str]
    ) -> InferenceBatch | TrainingBatch:
        """Score the frozen features (fp32).

        Returns:
            Eval mode: an :class:`InferenceBatch`. Training mode: a :class:`TrainingBatch` whose ``seg_probs`` are the
            per-level [normal, abnormal] maps on the channel axis ``(B, 2L, S, S)`` (``aacm_probs`` repeats them)
            and ``global_logits`` the detection logits ``(B, 2)`` (zeros in stage 1, which has none).
        """
        embeddings = features["embeddings"].float()
        if len(class_names) != embeddings.shape[0]:
            raise ConfigError(f"got {len(class_names)} class names for {embeddings.shape[0]} images; one per image")
        with torch.autocast(embeddings.device.type, enabled=False):
            if self.training and self.stage == "text":
                return self._stage1_outputs(features["stage1"].float(), class_names)
            with torch.no_grad():
                text = self.anchors(class_names, embeddings.device)
            taps = self.adapted_tokens(embeddings)
            seg = [F.normalize(proj(t), dim=-1) for proj, t in zip(self.seg_proj, taps, strict=True)]
            det = F.normalize(self.det_proj(taps[-1]), dim=-1).mean(dim=1)
            logits = (det[:, None] @ text)[:, 0]
            if self.training:
                maps = torch.cat([level_probs(s, text, self.image_size) for s in seg], dim=1)
                pixel = (maps[:, 1::2] + 1.0 - maps[:, 0::2]).mean(dim=1) / 2.0
                return TrainingBatch(pixel, self.image_scores(logits, pixel), maps, maps, logits)
            sigma, taps_n = BLURS[self.config.domain]
            diff = torch.stack([scoring_map(s, text, self.image_size, sigma, taps_n) for s in seg]).sum(dim=0)
            pixel = (0.5 + diff / (4.0 * len(seg))).clamp(0.0, 1.0)
            return InferenceBatch(pixel, self.image_scores(logits, pixel))

    def _stage1_outputs(self, stage1: torch.Tensor, class_names: list[str]) -> TrainingBatch:
        text = self.anchors(class_names, stage1.device)
        levels = self._stage1_levels()
        if self.vision.projected_stage1:
            patches = [stage1[:, i] for i in range(len(levels))]
        else:
            projs = [self.seg_proj[self.levels.index(v)] for v in levels]
            patches = [F.normalize(p(stage1[:, i]), dim=-1) for i, p in enumerate(projs)]
        maps = torch.cat([level_probs(p, text, self.image_size) for p in patches], dim=1)
        pixel = (maps[:, 1::2] + 1.0 - maps[:, 0::2]).mean(dim=1) / 2.0
        self._anchors = text
        logits = maps.new_zeros(maps.shape[0], 2)
        return TrainingBatch(pixel, self.image_scores(logits, pixel), maps, maps, logits)

    def image_scores(self, logits: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
        """Image score under the configured policy; the global score is ``(<det, t_abn> + 1) / 2``."""
        return policy_image_scores(self.config.image_score, (logits[:, 1] + 1.0) / 2.0, pixel)

    def compute_loss(
        self, outputs: InferenceBatch | TrainingBatch, masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The loss of the current stage: map terms (focal + dice(abnormal, mask) + dice(normal, 1 - mask), summed
        over the levels) plus, in stage 1, the weighted orthogonality of the anchors, in stage 2 the detection
        cross entropy.

        Returns:
            ``total`` and the detached terms ``seg``, ``orthogonal`` (stage 1) or ``global`` (stage 2).
        """
        outputs = training_outputs(outputs, labels)
        target = prepare_masks(masks, outputs.seg_probs.shape[-1]).squeeze(1)
        seg = outputs.seg_probs.new_zeros(())
        for probs in outputs.seg_probs.split(2, dim=1):
            seg = seg + focal_loss(probs, target)
            seg = seg + dice_loss(probs[:, 0], 1.0 - target) + dice_loss(probs[:, 1], target)
        if self.stage == "text":
            if self._anchors is None:
                raise ConfigError("the stage-1 loss needs a stage-1 training forward first (forward_head)")
            ortho = (self._anchors[:, :, 0] * self._anchors[:, :, 1]).sum(dim=1).mean() ** 2
            self._anchors = None
            total = seg + self.config.orthogonal_weight * ortho
            return {"total": total, "seg": seg.detach(), "orthogonal": ortho.detach()}
        ce = F.cross_entropy(outputs.global_logits, labels.to(masks.device).long())
        return {"total": seg + ce, "seg": seg.detach(), "global": ce.detach()}

    def trainable_modules(self) -> nn.ModuleDict:
        """The text adapters and projection, the vision adapters, the per-level and detection projections."""
        return nn.ModuleDict(
            {"text": self.text, "layer_adapters": self.layer_adapters, "seg_proj": self.seg_proj,
             "det_proj": self.det_proj}
        )  # fmt: skip

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen vision tower or DINOv3 (``backbone``) and the CLIP text tower (``text``)."""
        return {"backbone": self.vision_info, "text": self.text_info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The frozen embedding (the adapted blocks carry gradients and change per stage)."""
        return [(self.vision, "embed")]

    def card_extras(self) -> dict[str, Any]:
        """``compat``, the tapped ``levels``, the test-map blur (domain, sigma, taps) and the stage schedule."""
        sigma, taps = BLURS[self.config.domain]
        return {
            "compat": self.compat,
            "levels": list(self.levels),
            "blur": {"domain": self.config.domain, "sigma": sigma, "taps": taps},
            "stages": {"text_epochs": self.config.text_epochs, "text_lr_scale": self.config.text_lr_scale},
            "release_adapters": self.release_info,
        }


class AAClipDinov3(AAClip):
    """The AA-CLIP recipe on a frozen DINOv3 with the CLIP text tower (configured by :class:`AAClipDinoConfig`)."""

    config_class = AAClipDinoConfig



@register_factory(AAClip)
def aa_clip(**cfg: Any) -> AAClip:
    """Build ``aa_clip`` (its catalogue entry: :mod:`medad.models.aa_clip_config`)."""
    return AAClip(model_config("aa_clip", AAClipConfig, **cfg), name="aa_clip")


@register_factory(AAClip)
def aa_clip_tiny(**cfg: Any) -> AAClip:
    """Build ``aa_clip_tiny`` (its catalogue entry: :mod:`medad.models.aa_clip_config`)."""
    return AAClip(model_config("aa_clip_tiny", AAClipConfig, **cfg), name="aa_clip_tiny")


@register_factory(AAClipDinov3)
def aa_clip_dinov3(**cfg: Any) -> AAClip:
    """Build ``aa_clip_dinov3`` (its catalogue entry: :mod:`medad.models.aa_clip_config`)."""
    return AAClipDinov3(model_config("aa_clip_dinov3", AAClipDinoConfig, **cfg), name="aa_clip_dinov3")


@register_factory(AAClipDinov3)
def aa_clip_dinov3_tiny(**cfg: Any) -> AAClip:
    """Build ``aa_clip_dinov3_tiny`` (its catalogue entry: :mod:`medad.models.aa_clip_config`)."""
    return AAClipDinov3(model_config("aa_clip_dinov3_tiny", AAClipDinoConfig, **cfg), name="aa_clip_dinov3_tiny")
