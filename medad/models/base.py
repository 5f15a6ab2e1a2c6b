"""The model contract: what every medad model is, what it returns, and what the engine may branch on.

Every registered model is an :class:`AnomalyModel` (an ``nn.Module``) with a ``kind`` (:class:`ModelKind`, the
way anomalib's ``learning_type`` tells its Engine how to fit and score a model), an input side, a normalisation,
a JSON card and a ``forward(images, class_names) -> InferenceBatch``. The three kinds:

* :class:`TrainableAnomalyModel` (``TRAINABLE``, e.g. AD-DINOv3): timm's names, ``forward_features(images)``
  runs ONLY the frozen backbone (no grad, so its output can be cached across epochs) and
  ``forward_head(features, class_names)`` the trained head; ``forward`` is the two in a row. In training mode the
  head returns a :class:`TrainingBatch` (what the loss needs), in eval mode an :class:`InferenceBatch`.
* ``TRAINING_FREE`` models (e.g. WinCLIP): nothing to train, no checkpoint; ``forward`` scores images one at a time.
* :class:`TransductiveAnomalyModel` (``TRANSDUCTIVE``, e.g. ``dinov3_mutual``): training-free, and an image is
  scored against the other images of its scoring set: ``forward_features(images)`` per batch, then
  ``score_set(features, positions)`` once the whole set's features are known.

Outputs are NamedTuples of tensors, so ``torch.compile``, ``torch.jit.trace`` and ONNX export see plain tuples.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models.config import ModelConfig
from medad.models.kind import ModelKind

if TYPE_CHECKING:
    from medad.models.patch_memory import PatchMemory

Features = dict[str, torch.Tensor]
"""What ``forward_features`` returns: named batch-first tensors of the frozen backbone (cacheable)."""

RGB = tuple[float, float, float]

MEMORY_OVER_ZERO_SHOT = 1.0 / 1.1
"""``fewshot_weight`` of the trained CLIP/DINO methods: AF-CLIP's few-shot map is the memory map plus 0.1 x the
zero-shot map (``clip/model.py``, ``detect_forward``), the form of AnomalyCLIP+ in AdaptCLIP's tables; normalised
so the weights sum to 1 (``1 / 1.1`` and ``0.1 / 1.1``)."""

RANDOM_PART_WORDS = {"adapters": "untrained (randomly initialised) adapters"}
"""How a message names a random part; a frozen part reads ``random frozen <part> weights``."""


class InferenceBatch(NamedTuple):
    """What a model returns for a batch of ``B`` images of side ``S``.

    Attributes:
        pixel_scores: ``(B, S, S)`` anomaly map in [0, 1].
        image_scores: ``(B,)`` image anomaly score (under the model's ``image_score`` policy).
    """

    pixel_scores: torch.Tensor
    image_scores: torch.Tensor


class TrainingBatch(NamedTuple):
    """What a trainable model's head returns in training mode: the inference outputs plus what the loss needs.

    Attributes:
        pixel_scores: ``(B, S, S)`` anomaly map in [0, 1].
        image_scores: ``(B,)`` image anomaly score.
        seg_probs: ``(B, 2, S, S)`` [normal, anomalous] segmentation probabilities (AD-DINOv3: the CMCL map).
        aacm_probs: ``(B, 2, S, S)`` [normal, anomalous] CLS-patch map (AD-DINOv3: the AACM map).
        global_logits: ``(B, 2)`` [normal, anomalous] image logits.
    """

    pixel_scores: torch.Tensor
    image_scores: torch.Tensor
    seg_probs: torch.Tensor
    aacm_probs: torch.Tensor
    global_logits: torch.Tensor


def patch_grids(tokens: torch.Tensor, layers: Sequence[int]) -> Features:
    """Per-layer patch grids ``{"layer<l>": (B, g, g, C)}`` of ``(B, L, g*g, C)`` tokens of tapped blocks ``layers``
    (what :meth:`AnomalyModel.reference_features` returns)."""
    b, n_layers, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n or n_layers != len(layers):
        raise ValueError(f"tokens {tuple(tokens.shape)} are not {len(layers)} layers of a square patch grid")
    return {f"layer{layer}": tokens[:, i].reshape(b, side, side, c) for i, layer in enumerate(layers)}


def rgb(values: Sequence[float]) -> RGB:
    """Three floats (a per-channel mean or std) from any sequence; refuses another length."""
    if len(values) != 3:
        raise ConfigError(f"a normalisation mean/std needs 3 values (R, G, B), got {list(values)}")
    return float(values[0]), float(values[1]), float(values[2])


def policy_image_scores(policy: str, global_scores: torch.Tensor, pixel_scores: torch.Tensor) -> torch.Tensor:
    """The image-score policy every model shares (``image_score`` in its config).

    Args:
        policy: ``global`` (the model's own image-level score), ``max`` (of the pixel map) or ``blend`` (their mean).
        global_scores: ``(B,)`` the model's image-level score (AD-DINOv3: CLS vs text; WinCLIP: the CLS zero-shot
            score; ``dinov3_mutual``: the top-fraction mean of its patch scores).
        pixel_scores: ``(B, S, S)`` the pixel map.

    Returns:
        ``(B,)`` image scores.
    """
    if policy == "global":
        return global_scores
    max_scores = pixel_scores.flatten(1).amax(dim=1)
    if policy == "max":
        return max_scores
    return 0.5 * (global_scores + max_scores)


def zero_shot_global(policy: str, zero_shot: InferenceBatch) -> torch.Tensor:
    """The model's own image-level score inside a zero-shot output made under ``policy`` (``global`` or ``blend``):
    the inverse of :func:`policy_image_scores` (``blend = (global + max) / 2``)."""
    if policy == "global":
        return zero_shot.image_scores
    if policy == "blend":
        return 2.0 * zero_shot.image_scores - zero_shot.pixel_scores.flatten(1).amax(dim=1)
    raise ValueError(f"policy {policy!r} holds no image-level score")


class AnomalyModel(nn.Module, abc.ABC):
    """Base of every medad model.

    Args:
        config: The model's configuration (recorded in the card); gives ``compat`` and ``image_size``.
        name: Registry name recorded in the card.

    Subclasses name their config class (``config_class``), set ``mean`` / ``std`` (the normalisation of their
    frozen weights), may check a config against their architecture (:meth:`check_config`) and implement
    :meth:`forward`, :meth:`frozen_weights` and :meth:`compile_targets`; they may add card entries with
    :meth:`card_extras`.
    """

    kind: ClassVar[ModelKind]
    config_class: ClassVar[type[ModelConfig]]
    mean: RGB
    std: RGB
    fewshot_weight: ClassVar[float] = 0.5
    """Weight of the few-shot (memory) map in the fused map ``w * few_shot + (1 - w) * zero_shot``. Default 0.5:
    WinCLIP+ (Jeong et al., CVPR 2023) and AnomalyCLIP+ / AdaptCLIP's few-shot variants average the two maps."""
    needs_references: ClassVar[bool] = False
    """True for a model that cannot score without reference images (``anomalydino``)."""
    fewshot_radii: ClassVar[tuple[int, ...] | None] = None
    """Neighbourhood radii the model's own few-shot form fixes (``anomalydino``: ``(1,)``, raw patches); ``None``
    uses the reference set's (default ``(1, 3, 5)``, MuSc / AF-CLIP)."""

    def __init__(self, config: ModelConfig, name: str) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.compat: str = config.compat
        self.image_size: int = config.image_size
        self.study: dict[str, Any] = {}  # what the study scoring this model records of it (card ``study``)
        self._compiled = False

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Checks of a config that need the architecture but no weights: the config's own
        :meth:`~medad.models.config.ModelConfig.check_architecture` (which needs no torch)."""
        config.check_architecture()

    @classmethod
    def needed_weights(cls, config: ModelConfig) -> dict[str, dict[str, str]]:
        """The frozen weights a model of ``config`` loads (the config's
        :meth:`~medad.models.config.ModelConfig.needed_weights`)."""
        return config.needed_weights()

    def train(self, mode: bool = True) -> AnomalyModel:
        """Frozen models stay in eval mode; a trainable model sets its head's mode (its frozen parts stay eval)."""
        return super().train(mode and self.kind is ModelKind.TRAINABLE)

    def check_images(self, images: torch.Tensor) -> None:
        """Refuse a batch that is not ``(B, 3, S, S)`` at this model's side ``S``."""
        if images.dim() != 4 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"images must be (B, 3, {self.image_size}, {self.image_size}) for this model, got "
                f"{tuple(images.shape)}; resize them with make_dataset(image_size=model.image_size)"
            )

    @abc.abstractmethod
    def forward(self, images: torch.Tensor, class_names: list[str]) -> InferenceBatch | TrainingBatch:
        """Score normalised ``(B, 3, S, S)`` images, one prompt word per image: an :class:`InferenceBatch` (a
        :class:`TrainingBatch` only from a trainable model in training mode; both have ``pixel_scores`` and
        ``image_scores``)."""

    @abc.abstractmethod
    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen weights, by card key (``backbone``, ``text``, ``clip``): id, sha256, licence, source."""

    @abc.abstractmethod
    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The (module, method name) pairs :meth:`compile` replaces by their compiled form (the backbone)."""

    def compile(self) -> None:
        """``torch.compile`` the frozen backbone's forward once, with static shapes (``dynamic=False``).

        Unlike ``nn.Module.compile`` this compiles only the backbone (where the time goes), so a caller pads the
        last batch to the batch size to keep one graph. Idempotent: a second call does nothing.
        """
        if self._compiled:
            return
        for module, method in self.compile_targets():
            setattr(module, method, torch.compile(getattr(module, method), dynamic=False))
        self._compiled = True

    def trainable_parameters(self) -> int:
        """How many parameters training updates (0 for a training-free model)."""
        return 0

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """The patch features that feed the few-shot memory bank (:class:`~medad.models.patch_memory.PatchMemory`),
        ``{layer: (B, h, w, C)}``, for normalised ``(B, 3, S, S)`` images; the engine calls it on the reference
        images and on the targets alike. Each model says which features (raw frozen tokens or adapted ones) and why.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define its few-shot features")

    def fewshot_patch_scores(self, memory: PatchMemory, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The few-shot patch map ``(B, h, w)`` in [0, 1] of targets' :meth:`reference_features` against the
        references' ``memory`` (default: :meth:`PatchMemory.score`; ``anomalydino`` zeroes its masked background)."""
        return memory.score(features)

    def fewshot_image_scores(self, fused: torch.Tensor, zero_shot: InferenceBatch | None) -> torch.Tensor:
        """Image scores ``(B,)`` of a fused few-shot map ``(B, S, S)`` under this model's ``image_score`` policy.

        ``max`` is the fused map's maximum; ``global`` and ``blend`` average the model's zero-shot image-level score
        with it (WinCLIP+'s image score: the zero-shot score plus the few-shot map's maximum, halved). Without a
        zero-shot output the fused maximum is the score.
        """
        fused_max = fused.flatten(1).amax(dim=1)
        if zero_shot is None or self.config.image_score == "max":
            return fused_max
        return 0.5 * (zero_shot_global(self.config.image_score, zero_shot) + fused_max)

    def card_extras(self) -> dict[str, Any]:
        """Model-specific card entries (default: none)."""
        return {}

    def random_parts(self) -> list[str]:
        """The parts whose weights are random: frozen weights built with ``random_init`` (by card key:
        ``backbone``, ``text``, ``clip``) and, for a trainable model, ``adapters`` that were neither trained nor
        loaded from a checkpoint."""
        return [key for key, info in self.frozen_weights().items() if info["source"] == "random"]

    def card(self) -> dict[str, Any]:
        """JSON-serialisable description: name, config, frozen weights (ids, sha256, licences), random flag.

        ``random_weights`` is true when any part is random (:meth:`random_parts`, listed in ``random_parts``),
        untrained adapters included: every consumer of the flag (scores, exports, gallery, report) then says
        that the scores mean nothing. ``study`` (only when a protocol set :attr:`study`): the checkpoint epoch a
        protocol pinned and its not-zero-shot mark, which the paper view and report repeat.
        """
        weights = self.frozen_weights()
        random_parts = self.random_parts()
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "image_size": self.image_size,
            "image_score": self.config.image_score,
            **{key: dict(info) for key, info in weights.items()},
            "random_weights": bool(random_parts),
            "random_parts": random_parts,
            "trainable_parameters": self.trainable_parameters(),
            **self.card_extras(),
            "mean": list(self.mean),
            "std": list(self.std),
            **({"study": dict(self.study)} if self.study else {}),
        }


def training_outputs(outputs: InferenceBatch | TrainingBatch, labels: torch.Tensor) -> TrainingBatch:
    """The training-mode outputs a ``compute_loss`` needs, with labels all 0 or 1; else one :class:`ConfigError`."""
    if not isinstance(outputs, TrainingBatch):
        raise ConfigError("the loss needs training-mode outputs; call model.train() before the forward pass")
    if labels.numel() and (labels.min() < 0 or labels.max() > 1):
        raise ConfigError("training labels must be 0 (normal) or 1 (abnormal); drop images with unknown labels")
    return outputs


def state_fit_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``expected``: missing and unexpected keys
    and wrong shapes (the first three of each), empty when it fits."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [f"missing {missing[:3]}"] if missing else []
    problems += [f"unexpected {extra[:3]}"] if extra else []
    return problems + [f"{k} is {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}" for k in wrong[:3]]


def describe_random_parts(parts: Sequence[str]) -> str:
    """The random parts of a card (``random_parts``) in words, e.g. ``random frozen backbone / text weights,
    untrained (randomly initialised) adapters``; ``random weights`` for a card that predates the list."""
    frozen = [p for p in parts if p not in RANDOM_PART_WORDS]
    words = [f"random frozen {' / '.join(frozen)} weights"] if frozen else []
    words += [RANDOM_PART_WORDS[p] for p in parts if p in RANDOM_PART_WORDS]
    return ", ".join(words) or "random weights"


class TrainableAnomalyModel(AnomalyModel):
    """A model with a trained head on a frozen backbone (kind ``TRAINABLE``)."""

    kind: ClassVar[ModelKind] = ModelKind.TRAINABLE
    fewshot_weight: ClassVar[float] = MEMORY_OVER_ZERO_SHOT
    """AF-CLIP's form (memory map + 0.1 x zero-shot map), as the trained methods of AdaptCLIP's few-shot tables."""

    def __init__(self, config: ModelConfig, name: str) -> None:
        super().__init__(config, name)
        self.adapters_trained = False

    def mark_adapters_trained(self) -> None:
        """Record that the trainable parts hold trained weights (training ran, or a checkpoint was loaded), so the
        card no longer lists ``adapters`` among the random parts."""
        self.adapters_trained = True

    def random_parts(self) -> list[str]:
        """The random frozen parts, plus ``adapters`` while they hold their random initialisation."""
        return [*super().random_parts(), *([] if self.adapters_trained else ["adapters"])]

    @abc.abstractmethod
    def forward_features(self, images: torch.Tensor) -> Features:
        """Run only the frozen backbone (no grad); the result can be cached and fed to :meth:`forward_head`."""

    @abc.abstractmethod
    def forward_head(
        self, features: Mapping[str, torch.Tensor], class_names: list[str]
    ) -> InferenceBatch | TrainingBatch:
        """Run the head on backbone features: a :class:`TrainingBatch` in training mode, else an
        :class:`InferenceBatch`."""

    def forward(self, images: torch.Tensor, class_names: list[str]) -> InferenceBatch | TrainingBatch:
        """``forward_head(forward_features(images), class_names)``."""
        return self.forward_head(self.forward_features(images), class_names)

    @abc.abstractmethod
    def compute_loss(
        self, outputs: InferenceBatch | TrainingBatch, masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The training loss of a training-mode head output: ``total`` plus the named terms."""

    @abc.abstractmethod
    def trainable_modules(self) -> nn.ModuleDict:
        """The modules training updates (everything else is frozen)."""

    def trainable_parameters(self) -> int:
        """How many parameters :meth:`trainable_modules` hold."""
        return int(sum(p.numel() for p in self.trainable_modules().parameters()))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the trained modules only (what a checkpoint stores)."""
        return {k: v.detach().clone() for k, v in self.trainable_modules().state_dict().items()}

    trained_weights: ClassVar[str] = "weights"
    """What a refusal calls the trained parameters (``adapter weights``, ``prompt weights``)."""
    card_shape: ClassVar[str] = "its options"
    """The card options that shape the trained parameters, named in a refusal so the user knows what to match."""

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load trained weights; a missing / extra key or a wrong shape raises :class:`WeightsError` naming them
        (:func:`state_fit_problems`) and the card options (``card_shape``) a fitting model is built with."""
        problems = state_fit_problems(self.trainable_modules().state_dict(), state)
        if problems:
            raise WeightsError(
                f"{self.trained_weights} do not fit this {self.name} model: {'; '.join(problems)}; load them into a "
                f"model built with the checkpoint's card ({self.card_shape})"
            )
        self.trainable_modules().load_state_dict(dict(state))

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each 0-based epoch (a resumed run too), so a model whose recipe has
        stages picks the stage of that epoch (default: nothing)."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups at the run's rate ``lr`` (default: every trainable parameter at ``lr``;
        a model whose parts train at other rates returns a group per part with its own ``lr``)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


class TransductiveAnomalyModel(AnomalyModel):
    """A training-free model that scores each image against the other images of its scoring set."""

    kind: ClassVar[ModelKind] = ModelKind.TRANSDUCTIVE

    @abc.abstractmethod
    def forward_features(self, images: torch.Tensor) -> Features:
        """Per-image frozen features of a batch (no grad); a set's batches are concatenated for :meth:`score_set`."""

    @abc.abstractmethod
    def score_set(self, features: Mapping[str, torch.Tensor], positions: Sequence[int] | None = None) -> InferenceBatch:
        """Score the images at ``positions`` (default all) of a whole set's concatenated features."""

    def forward(self, images: torch.Tensor, class_names: list[str] | None = None) -> InferenceBatch:
        """Treat the batch as the scoring set (``class_names`` is ignored)."""
        return self.score_set(self.forward_features(images))
