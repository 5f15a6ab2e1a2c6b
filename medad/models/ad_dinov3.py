"""AD-DINOv3: frozen DINOv3 patch/CLS tokens + frozen CLIP text ensemble + trained linear adapters.

See ``docs/models.md`` (the method as released, and how medad treats its quirks). Two behaviours (``compat``):
``reference`` reproduces the released code (interleaving text reshape, GELU text tower, path-derived class
word, ``fc2`` kept registered); ``clean`` fixes those quirks (stacked text columns, the activation the text
weights were trained with, real class words).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models import head
from medad.models.ad_dinov3_config import ADDINOv3Config
from medad.models.base import (
    Features,
    InferenceBatch,
    TrainableAnomalyModel,
    TrainingBatch,
    patch_grids,
    policy_image_scores,
    training_outputs,
)
from medad.models.dinov3 import DinoBackbone, build_frozen_dino
from medad.models.losses import ad_dinov3_loss
from medad.models.registry import model_config, register_factory
from medad.models.text import TextEncoder
from medad.models.weights import build_text_tower, text_model_config


class ADDINOv3(TrainableAnomalyModel):
    """The AD-DINOv3 model (trainable: adapters on a frozen DINOv3 and a frozen CLIP text tower).

    Args:
        config: The configuration.
        name: Registry name recorded in the card.
    """

    config_class = ADDINOv3Config
    config: ADDINOv3Config

    def __init__(self, config: ADDINOv3Config, name: str = "ad_dinov3") -> None:
        self.check_config(config)
        super().__init__(config, name)
        self.layers = tuple(config.layers)
        vit, self.backbone_info, self.mean, self.std = build_frozen_dino(config, name)
        self.backbone = DinoBackbone(vit, self.layers)
        tower, text_info = build_text_tower(
            config.text_model,
            None if config.random_init else config.text_weights,
            quick_gelu=config.resolved_quick_gelu(),
            random_init=config.random_init,
            overrides=config.text_overrides,
            init_seed=config.init_seed + 1,
        )
        text_cfg = text_model_config(config.text_model, config.text_overrides)
        self.text_encoder = TextEncoder(
            tower, config.text_model, text_info, text_cfg, disk_cache=config.text_disk_cache
        )
        vis_dim, text_dim, dim = vit.embed_dim, int(text_cfg["embed_dim"]), config.adapter_dim
        keep_fc2 = config.compat == "reference"
        self.release_order = config.compat == "reference"  # the release's operation order: bit-equal outputs
        self.patch_adapters = nn.ModuleList(head.Adapter(vis_dim, dim, keep_fc2) for _ in self.layers)
        self.cls_adapters = nn.ModuleList(head.Adapter(vis_dim, dim, keep_fc2) for _ in self.layers)
        self.text_adapters = nn.ModuleList(head.Adapter(text_dim, dim, keep_fc2) for _ in range(2))

    def train(self, mode: bool = True) -> ADDINOv3:
        """Set the adapters' mode; the frozen backbone and text tower always stay in eval mode."""
        super().train(mode)
        self.backbone.train(False)
        self.text_encoder.train(False)
        return self

    def forward_features(self, images: torch.Tensor) -> Features:
        """Run the frozen backbone (no grad); the result can be cached and fed to :meth:`forward_head`.

        Returns:
            ``patch_tokens`` ``(B, L, N, C)`` and ``cls_tokens`` ``(B, L, C)`` (see :class:`DinoBackbone`).
        """
        self.check_images(images)
        return self.backbone(images)

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """Few-shot memory features: the frozen DINOv3's standardised final-norm patch tokens at the tapped layers
        (:meth:`forward_features`), not the adapted ones: the adapters are trained to align patches with text,
        while raw DINO tokens are what nearest-neighbour few-shot methods match (AnomalyDINO; AF-CLIP's raw-token
        memory). ``class_names`` is unused."""
        return patch_grids(self.forward_features(images)["patch_tokens"], self.layers)

    def text_features(self, class_names: list[str], device: torch.device) -> torch.Tensor:
        """Return the frozen ``(B, D_text, 2)`` prompt-ensemble matrices of the class words."""
        return self.text_encoder(class_names, device)

    def forward_head(
        self, features: Mapping[str, torch.Tensor], class_names: list[str]
    ) -> InferenceBatch | TrainingBatch:
        """Run the trainable head on backbone features, in fp32 even under autocast (it is cheap, and bf16 logits
        scaled by 100 would visibly move the maps).

        Args:
            features: Output of :meth:`forward_features`.
            class_names: One prompt word per image (see :func:`medad.models.prompt_word`).

        Returns:
            In eval mode an :class:`InferenceBatch`: ``pixel_scores`` (B, S, S) in [0, 1] (CMCL anomaly channel,
            smoothed if configured) and ``image_scores`` (B,); the AACM map, unused at inference, is skipped and the
            pixel map takes the equivalent one-channel path (:func:`medad.models.head.cmcl_anomaly_probability`).
            In training mode a :class:`TrainingBatch` with also what the loss needs: ``seg_probs`` (B, 2, S, S)
            CMCL map M, ``aacm_probs`` (B, 2, S, S) AACM map A and ``global_logits`` (B, 2).
        """
        patch_tokens = features["patch_tokens"].float()
        cls_tokens = features["cls_tokens"].float()
        with torch.autocast(patch_tokens.device.type, enabled=False):
            text = self._head_text(class_names, patch_tokens)
            if self.training:
                return self._training_outputs(patch_tokens, cls_tokens, text)
            return self._inference_outputs(patch_tokens, cls_tokens, text)

    def global_logits(self, features: Mapping[str, torch.Tensor], class_names: list[str]) -> torch.Tensor:
        """The ``(B, 2)`` [normal, anomalous] CLS-vs-text logits averaged over the tapped layers, as the eval-mode
        head computes them for the ``global`` image score (fp32)."""
        cls_tokens = features["cls_tokens"].float()
        with torch.autocast(cls_tokens.device.type, enabled=False):
            return self._mean_global_logits(cls_tokens, self._head_text(class_names, cls_tokens))

    def _head_text(self, class_names: list[str], tokens: torch.Tensor) -> torch.Tensor:
        """The adapted ``(B, D, 2)`` text matrix of one word per image of ``tokens`` (call with autocast off)."""
        if len(class_names) != tokens.shape[0]:
            raise ConfigError(
                f"got {len(class_names)} class names for {tokens.shape[0]} images; pass one word per image"
            )
        t0 = self.text_features(list(class_names), tokens.device)
        return head.combine_text(self.text_adapters[0](t0[..., 0]), self.text_adapters[1](t0[..., 1]), self.compat)

    def _mean_global_logits(self, cls_tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                head.global_logits(F.normalize(adapter(cls_tokens[:, i]), dim=-1), text, self.release_order)
                for i, adapter in enumerate(self.cls_adapters)
            ]
        ).mean(dim=0)

    def _inference_outputs(
        self, patch_tokens: torch.Tensor, cls_tokens: torch.Tensor, text: torch.Tensor
    ) -> InferenceBatch:
        patches = torch.stack(
            [F.normalize(adapter(patch_tokens[:, i]), dim=-1) for i, adapter in enumerate(self.patch_adapters)], dim=1
        )
        logits = self._mean_global_logits(cls_tokens, text)
        if self.release_order:  # the release's two-channel maps, softmax after upsampling, averaged over layers
            layer_maps = [head.cmcl_map(patches[:, i], text, self.image_size, True) for i in range(len(self.layers))]
            anomaly = torch.stack(layer_maps).mean(dim=0)[:, 1]
        else:  # the same map up to float rounding, with one one-channel upsampling
            anomaly = head.cmcl_anomaly_probability(patches, text, self.image_size)
        pixel = head.gaussian_blur(anomaly, self.config.smoothing_sigma).clamp(0.0, 1.0)
        return InferenceBatch(pixel, self.image_scores(logits, pixel))

    def _training_outputs(
        self, patch_tokens: torch.Tensor, cls_tokens: torch.Tensor, text: torch.Tensor
    ) -> TrainingBatch:
        segs, aacms, layer_logits = [], [], []
        for i in range(len(self.layers)):
            p = F.normalize(self.patch_adapters[i](patch_tokens[:, i]), dim=-1)
            c = F.normalize(self.cls_adapters[i](cls_tokens[:, i]), dim=-1)
            segs.append(head.cmcl_map(p, text, self.image_size, self.release_order))
            aacms.append(head.aacm_map(p, c, self.image_size, self.release_order))
            layer_logits.append(head.global_logits(c, text, self.release_order))
        seg, aacm, logits = (self._layer_mean(x) for x in (segs, aacms, layer_logits))
        pixel = head.gaussian_blur(seg[:, 1], self.config.smoothing_sigma).clamp(0.0, 1.0)
        return TrainingBatch(pixel, self.image_scores(logits, pixel), seg, aacm, logits)

    def _layer_mean(self, values: list[torch.Tensor]) -> torch.Tensor:
        """The mean over the tapped layers: the release's ``torch.mean(torch.stack(...), dim=0)`` in reference mode,
        a running sum in layer order divided by the count in clean mode (equal up to float rounding)."""
        if self.release_order:
            return torch.stack(values).mean(dim=0)
        return sum(values[1:], values[0]) / len(values)

    def image_scores(self, logits: torch.Tensor, pixel_scores: torch.Tensor) -> torch.Tensor:
        """Image score under the configured policy (:func:`~medad.models.base.policy_image_scores`; the global
        score is the softmax anomalous probability of the CLS-vs-text logits)."""
        return policy_image_scores(self.config.image_score, torch.softmax(logits, dim=-1)[:, 1], pixel_scores)

    @torch.no_grad()
    def explain(self, images: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
        """Every intermediate map of one forward pass, for inspection (notebooks, figures); no gradients.

        Args:
            images: ``(B, 3, S, S)`` normalised with ``model.mean`` / ``model.std``.
            class_names: One prompt word per image.

        Returns:
            ``layers`` (the tapped 1-based blocks), ``cmcl_layers`` (B, L, S, S) anomaly channel of each layer's
            CMCL map, ``cmcl`` (B, S, S) their mean, ``aacm_layers`` (B, L, S, S) / ``aacm`` (B, S, S) the same for
            the AACM map (CLS-patch similarity, used only by the loss), ``global_scores`` (B,) the CLS-vs-text
            anomaly probability, and ``pixel_scores`` / ``image_scores`` exactly as :meth:`forward` returns them.
        """
        features = self.forward_features(images)
        patch_tokens = features["patch_tokens"].float()
        cls_tokens = features["cls_tokens"].float()
        with torch.autocast(patch_tokens.device.type, enabled=False):
            text = self._head_text(class_names, patch_tokens)
            cmcl, aacm, logits = [], [], []
            for i in range(len(self.layers)):
                p = F.normalize(self.patch_adapters[i](patch_tokens[:, i]), dim=-1)
                c = F.normalize(self.cls_adapters[i](cls_tokens[:, i]), dim=-1)
                cmcl.append(head.cmcl_map(p, text, self.image_size, self.release_order)[:, 1])
                aacm.append(head.aacm_map(p, c, self.image_size, self.release_order)[:, 1])
                logits.append(head.global_logits(c, text, self.release_order))
            cmcl_layers, aacm_layers = torch.stack(cmcl, dim=1), torch.stack(aacm, dim=1)
            mean_logits = torch.stack(logits).mean(dim=0)
            pixel = head.gaussian_blur(cmcl_layers.mean(dim=1), self.config.smoothing_sigma).clamp(0.0, 1.0)
        return {
            "layers": self.layers,
            "cmcl_layers": cmcl_layers,
            "cmcl": cmcl_layers.mean(dim=1),
            "aacm_layers": aacm_layers,
            "aacm": aacm_layers.mean(dim=1),
            "global_scores": torch.softmax(mean_logits, dim=-1)[:, 1],
            "pixel_scores": pixel,
            "image_scores": self.image_scores(mean_logits, pixel),
        }

    def compute_loss(
        self, outputs: InferenceBatch | TrainingBatch, masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The released loss (see :func:`medad.models.losses.ad_dinov3_loss`).

        Args:
            outputs: Output of :meth:`forward_head` in training mode.
            masks: ``(B, 1, H, W)`` float masks in {0, 1} (resized to the model size bilinearly, then > 0.5).
            labels: ``(B,)`` int64 image labels in {0, 1}.

        Returns:
            ``total`` plus the named terms.
        """
        outputs = training_outputs(outputs, labels)
        return ad_dinov3_loss(
            outputs.seg_probs, outputs.aacm_probs, outputs.global_logits, masks, labels.to(masks.device)
        )

    def trainable_modules(self) -> nn.ModuleDict:
        """The adapters, the only trained parameters."""
        return nn.ModuleDict(
            {
                "patch_adapters": self.patch_adapters,
                "cls_adapters": self.cls_adapters,
                "text_adapters": self.text_adapters,
            }
        )

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load adapter weights; a missing/extra key or wrong shape raises :class:`WeightsError`."""
        expected = self.trainable_modules().state_dict()
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise WeightsError(
                f"adapter weights do not fit this {self.name} model (compat {self.compat!r}, layers "
                f"{list(self.layers)}): missing {missing[:3]}, unexpected {extra[:3]}; load them into a model "
                "built with the checkpoint's card"
            )
        for key, value in expected.items():
            if tuple(state[key].shape) != tuple(value.shape):
                raise WeightsError(
                    f"adapter {key} is {tuple(state[key].shape)} in the checkpoint but {tuple(value.shape)} in this "
                    f"model (backbone {self.config.backbone!r}, adapter_dim {self.config.adapter_dim}); build the "
                    "model with the checkpoint's backbone and adapter_dim"
                )
        self.trainable_modules().load_state_dict(dict(state))

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen DINOv3 (``backbone``) and CLIP text tower (``text``) weights."""
        return {"backbone": self.backbone_info, "text": self.text_encoder.info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The ViT's ``forward_intermediates`` (all the backbone's work)."""
        return [(self.backbone.model, "forward_intermediates")]

    def card_extras(self) -> dict[str, Any]:
        """``compat``, the tapped ``layers`` and ``adapter_dim``."""
        return {"compat": self.compat, "layers": list(self.layers), "adapter_dim": self.config.adapter_dim}


@register_factory(ADDINOv3)
def ad_dinov3(**cfg: Any) -> ADDINOv3:
    """Build ``ad_dinov3`` (its catalogue entry: :mod:`medad.models.ad_dinov3_config`)."""
    return ADDINOv3(model_config("ad_dinov3", ADDINOv3Config, **cfg), name="ad_dinov3")


@register_factory(ADDINOv3)
def ad_dinov3_tiny(**cfg: Any) -> ADDINOv3:
    """Build ``ad_dinov3_tiny`` (its catalogue entry: :mod:`medad.models.ad_dinov3_config`)."""
    return ADDINOv3(model_config("ad_dinov3_tiny", ADDINOv3Config, **cfg), name="ad_dinov3_tiny")
