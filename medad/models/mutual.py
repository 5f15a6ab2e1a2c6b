"""``dinov3_mutual``: a training-free, text-free, TRANSDUCTIVE baseline (MuSc-style mutual scoring, Li et al.,
ICLR 2024), re-derived from the paper's description on frozen DINOv3 patch features.

Rule (exactly what :func:`mutual_patch_scores` computes). For a scoring set of ``N >= 2`` images (the scorer uses
one set per (dataset, class)), each tapped layer ``l`` gives every image ``i`` the L2-normalised final-norm patch
tokens ``f_i^l[p]`` (``P = g*g`` patches). For a patch ``p`` of image ``i`` and every OTHER image ``j != i``:

    d_ij(p) = min_q || f_i^l[p] - f_j^l[q] ||_2          (nearest patch of image j; never image i itself)

The layer score is the mean of the ``m = max(1, ceil(k * (N - 1)))`` smallest values among the ``N - 1`` minima
``{d_ij(p)}_{j != i}`` (``k = k_fraction``, 0.3 by default): a normal patch finds close matches in most other
images, an anomalous one does not, and ignoring the largest minima keeps the other anomalous images from
lowering anyone's score. Small sets are defined: for ``N = 2..4`` (``k = 0.3``) ``m = 1``, the nearest other
image (MuSc's release truncates ``int(0.3 * (N - 1)) = 0`` there and averages an empty slice, giving NaN); a set of
one image has no other image and is refused with a message saying to score at least 2 images together. The patch
score is the mean over layers divided by 2 (unit vectors are at most 2
apart), so it lies in [0, 1]; the ``g x g`` grid is bilinearly upsampled to the input size (optionally smoothed).
Image score (``image_score``): ``max`` of the map, ``global`` = mean of the top ``image_topk`` fraction of the
grid's patch scores (there is no text/CLS score), ``blend`` = their mean.

Memory: distances are computed with :func:`torch.cdist` in blocks of at most ``block_elements`` entries (query
images x reference images x P x P), reduced to per-image minima at once, and the per-query minima (``Q x P x N``)
are reduced to scores before the next query block; all pairwise patch distances never exist at once.

The model is transductive (kind ``ModelKind.TRANSDUCTIVE``): ``model(images, class_names)`` treats the batch as
the scoring set; :func:`medad.engine.scorer.score` calls :meth:`MutualScorer.forward_features` on every image of a
set and then :meth:`MutualScorer.score_set`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError
from medad.models import head
from medad.models.base import Features, InferenceBatch, TransductiveAnomalyModel, patch_grids, policy_image_scores
from medad.models.dinov3 import DinoPatchBackbone, build_frozen_dino
from medad.models.mutual_config import FEATURE_DTYPE_NAMES, MutualConfig
from medad.models.registry import model_config, register_factory

FEATURE_DTYPES = {name: getattr(torch, name) for name in FEATURE_DTYPE_NAMES}
"""``feature_dtype`` -> its torch dtype."""


def nearest_distances(features: torch.Tensor, query: Sequence[int], block_elements: int = 1 << 25) -> torch.Tensor:
    """Distance from every patch of each query image to its nearest patch in every image of the set.

    Args:
        features: ``(N, P, C)`` patch features of the set (any float dtype; blocks are computed in float32).
        query: Positions (in ``0..N-1``) of the images to score.
        block_elements: Upper bound on the entries of one ``cdist`` block.

    Returns:
        ``(Q, P, N)`` float32: entry ``[a, p, j]`` is ``min_q ||features[query[a], p] - features[j, q]||``, and
        ``+inf`` where ``j == query[a]`` (an image never matches itself).
    """
    n, p, _ = features.shape
    q_idx = torch.as_tensor(list(query), dtype=torch.long, device=features.device)
    out = torch.empty(len(q_idx), p, n, device=features.device)
    per_pair = p * p
    ref_block = max(1, min(n, block_elements // per_pair))
    query_block = max(1, min(len(q_idx), block_elements // (per_pair * ref_block)))
    for qs in range(0, len(q_idx), query_block):
        q = features[q_idx[qs : qs + query_block]].float()
        qb = q.shape[0]
        flat_q = q.reshape(qb * p, -1)
        for rs in range(0, n, ref_block):
            r = features[rs : rs + ref_block].float()
            rb = r.shape[0]
            d = torch.cdist(flat_q, r.reshape(rb * p, -1))
            out[qs : qs + qb, :, rs : rs + rb] = d.view(qb, p, rb, p).amin(dim=-1)
    out[torch.arange(len(q_idx), device=features.device), :, q_idx] = float("inf")
    return out


def mutual_patch_scores(
    features: torch.Tensor, query: Sequence[int], k_fraction: float = 0.3, block_elements: int = 1 << 25
) -> torch.Tensor:
    """MuSc-style mutual score of every patch of the query images (the rule in the module docstring).

    Args:
        features: ``(N, P, C)`` patch features of the scoring set (``N >= 2``).
        query: Positions of the images to score.
        k_fraction: Fraction of the ``N - 1`` other images whose smallest nearest-patch distances are averaged.
        block_elements: Bound on one distance block (also bounds the ``Q x P x N`` minima of one query block).

    Returns:
        ``(Q, P)`` float32 mean of the ``max(1, ceil(k_fraction * (N - 1)))`` smallest per-image minima.
    """
    n, p, _ = features.shape
    if n < 2:
        raise ConfigError("mutual scoring needs a set of at least 2 images (each image is scored against the others)")
    m = max(1, math.ceil(k_fraction * (n - 1) - 1e-9))
    query = list(query)
    step = max(1, block_elements // max(1, p * n))
    parts = []
    for start in range(0, len(query), step):
        minima = nearest_distances(features, query[start : start + step], block_elements)
        parts.append(torch.topk(minima, m, dim=-1, largest=False).values.mean(dim=-1))
    return torch.cat(parts) if parts else features.new_zeros(0, p, dtype=torch.float32)


class MutualScorer(TransductiveAnomalyModel):
    """The ``dinov3_mutual`` model (training-free, transductive)."""

    config_class = MutualConfig
    config: MutualConfig
    fewshot_weight: ClassVar[float] = 0.5
    """No published few-shot form for MuSc: the memory and mutual maps weigh equally, as in WinCLIP+."""

    def __init__(self, config: MutualConfig, name: str = "dinov3_mutual") -> None:
        self.check_config(config)
        super().__init__(config, name)
        self.layers = tuple(config.layers)
        vit, self.backbone_info, self.mean, self.std = build_frozen_dino(config, name)
        self.grid = config.image_size // vit.patch_embed.patch_size[0]
        self.backbone = DinoPatchBackbone(vit, self.layers)

    def forward_features(self, images: torch.Tensor) -> Features:
        """Per-image features of a batch: ``patch_tokens`` ``(B, L, P, C)`` unit vectors in ``feature_dtype``."""
        self.check_images(images)
        return {"patch_tokens": self.backbone(images).to(FEATURE_DTYPES[self.config.feature_dtype])}

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """Few-shot memory features: the same unit final-norm DINOv3 patch tokens the mutual score compares
        (:meth:`forward_features`), per tapped layer, in float32; the references are then a fixed normal memory
        next to the transductive set. ``class_names`` is unused."""
        return patch_grids(self.forward_features(images)["patch_tokens"].float(), self.layers)

    def patch_scores(
        self, features: Mapping[str, torch.Tensor], positions: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Mutual patch scores of images of one scoring set.

        Args:
            features: ``patch_tokens`` ``(N, L, P, C)`` of the WHOLE set (concatenated :meth:`forward_features`).
            positions: Positions of the images to score (default all); each is scored against the other ``N - 1``.

        Returns:
            ``(Q, g, g)`` float32 patch scores in [0, 1] (the mean over layers of the mutual score, halved).
        """
        tokens = features["patch_tokens"]
        n = tokens.shape[0]
        if n < 2:
            raise ConfigError(
                f"{self.name} is transductive: it scores each image against the others of its set and needs at least "
                "2 images per (dataset, class) set; score more images together"
            )
        query = list(range(n)) if positions is None else list(positions)
        with torch.autocast(tokens.device.type, enabled=False):
            per_layer = [
                mutual_patch_scores(tokens[:, i], query, self.config.k_fraction, self.config.block_elements)
                for i in range(tokens.shape[1])
            ]
            patch = (torch.stack(per_layer).mean(dim=0) / 2.0).clamp(0.0, 1.0)
        return patch.reshape(len(query), self.grid, self.grid)

    def score_set(self, features: Mapping[str, torch.Tensor], positions: Sequence[int] | None = None) -> InferenceBatch:
        """Mutually score images of one scoring set (:meth:`patch_scores`, upsampled to the input side).

        Returns:
            ``pixel_scores`` (Q, S, S) in [0, 1] and ``image_scores`` (Q,): ``global`` is the mean of the top
            ``image_topk`` fraction of an image's patch scores.
        """
        grid = self.patch_scores(features, positions)
        with torch.autocast(grid.device.type, enabled=False):
            pixel = F.interpolate(grid[:, None], size=self.image_size, mode="bilinear")[:, 0]
            pixel = head.gaussian_blur(pixel, self.config.smoothing_sigma).clamp(0.0, 1.0)
            patch = grid.flatten(1)
            top = max(1, math.ceil(self.config.image_topk * patch.shape[1]))
            global_score = torch.topk(patch, top, dim=1).values.mean(dim=1)
        return InferenceBatch(pixel, policy_image_scores(self.config.image_score, global_score, pixel))

    def score_images(self, batches: Iterable[torch.Tensor]) -> InferenceBatch:
        """Score one set given as an iterable of image batches (features are accumulated, then scored)."""
        parts = [self.forward_features(b)["patch_tokens"] for b in batches]
        if not parts:
            raise ConfigError("score_images got no images")
        return self.score_set({"patch_tokens": torch.cat(parts)})

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen DINOv3 (``backbone``) weights."""
        return {"backbone": self.backbone_info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The ViT's ``forward_intermediates``."""
        return [(self.backbone.model, "forward_intermediates")]

    def card_extras(self) -> dict[str, Any]:
        """The tapped ``layers``, the patch grid, ``transductive: True`` and what a scoring set is."""
        return {
            "layers": list(self.layers),
            "patch_grid": self.grid,
            "transductive": True,
            "scoring_set": "one set per (dataset, class_name) of the scored manifest",
        }


@register_factory(MutualScorer)
def dinov3_mutual(**cfg: Any) -> MutualScorer:
    """Build ``dinov3_mutual`` (its catalogue entry: :mod:`medad.models.mutual_config`)."""
    return MutualScorer(model_config("dinov3_mutual", MutualConfig, **cfg), name="dinov3_mutual")


@register_factory(MutualScorer)
def dinov3_mutual_tiny(**cfg: Any) -> MutualScorer:
    """Build ``dinov3_mutual_tiny`` (its catalogue entry: :mod:`medad.models.mutual_config`)."""
    return MutualScorer(model_config("dinov3_mutual_tiny", MutualConfig, **cfg), name="dinov3_mutual_tiny")
