"""Few-shot scoring: a model's zero-shot map fused with a nearest-neighbour map against k normal references.

The form WinCLIP+, AnomalyCLIP+ and AF-CLIP share: the reference images' patch features (the ones the model's
:meth:`~medad.models.base.AnomalyModel.reference_features` names) fill a
:class:`~medad.models.patch_memory.PatchMemory` (one bank per layer and neighbourhood radius); each target patch
gets its nearest-neighbour cosine distance, halved, the map is upsampled to the model input ``S`` and fused
``w * few_shot + (1 - w) * zero_shot`` (``w``: :func:`fewshot_weight`); the image score is the model's policy on
the fused map (:meth:`~medad.models.base.AnomalyModel.fewshot_image_scores`). A model that cannot score zero-shot
(``needs_references``, e.g. ``anomalydino``) gives the few-shot map alone. Nothing here branches on a model's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medad.engine.host_writes import HostBatch
from medad.engine.inferers import (
    Inferer,
    PlainInferer,
    ScoringRun,
    TransductiveInferer,
    batch_images,
    model_input_dataset,
)
from medad.engine.references import ReferenceSet, row_name
from medad.engine.skipped import SkippingSubset, collate_skipping
from medad.errors import ConfigError, DataError
from medad.utils.progress import track

if TYPE_CHECKING:
    from medad.models import AnomalyModel, TransductiveAnomalyModel
    from medad.models.base import Features, InferenceBatch
    from medad.models.patch_memory import PatchMemory

FEWSHOT_KEY = "fewshot:"
"""Prefix of the memory features a transductive set carries beside the model's own (never shown to the model)."""


def fewshot_weight(model: AnomalyModel, refs: ReferenceSet) -> float:
    """The weight of the few-shot map: the references' ``weight``, else the model's ``fewshot_weight``; 1 for a
    model without a zero-shot map (``needs_references``).

    Raises:
        ConfigError: a weight other than 1 for a model that has no zero-shot map to fuse with.
    """
    if model.needs_references:
        if refs.weight not in (None, 1.0):
            raise ConfigError(
                f"model {model.name!r} has no zero-shot map (it scores against the references only), so "
                f"--fewshot-weight {refs.weight:g} has nothing to weigh; drop --fewshot-weight"
            )
        return 1.0
    return float(model.fewshot_weight if refs.weight is None else refs.weight)


class Fusion:
    """The memory of one scoring run and the rule that fuses its map with the model's.

    Args:
        memory: the references' memory bank.
        weight: ``w`` of ``w * few_shot + (1 - w) * zero_shot``.
    """

    def __init__(self, memory: PatchMemory, weight: float) -> None:
        self.memory = memory
        self.weight = weight

    def fuse(
        self, model: AnomalyModel, features: Features, zero_shot: InferenceBatch | None, size: int
    ) -> InferenceBatch:
        """The fused maps ``(B, S, S)`` and image scores of targets with memory ``features`` and zero-shot outputs."""
        from medad.models.base import InferenceBatch

        few = model.fewshot_patch_scores(self.memory, features)
        few = F.interpolate(few[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        if zero_shot is None:
            fused = few.clamp(0.0, 1.0)
        else:
            fused = (self.weight * few + (1.0 - self.weight) * zero_shot.pixel_scores.float()).clamp(0.0, 1.0)
        return InferenceBatch(fused, model.fewshot_image_scores(fused, zero_shot))


def build_memory(
    model: AnomalyModel, refs: ReferenceSet, words: Sequence[str], run: ScoringRun, chunk: int = 4096
) -> PatchMemory:
    """The memory bank of the references' features, ``run.batch_size`` images per pass (with a progress bar).

    Raises:
        DataError: a reference cannot be read (named, with its reason): k references were asked for.
    """
    from medad.data import normalize_images
    from medad.models.patch_memory import PatchMemory

    memory = PatchMemory(refs.radii, chunk)
    rows = range(len(refs.manifest))
    loader = DataLoader(
        SkippingSubset(model_input_dataset(model, refs.manifest), rows, refs.manifest),
        batch_size=run.batch_size,
        num_workers=run.num_workers,
        collate_fn=collate_skipping,
    )
    mean = torch.tensor(model.mean, dtype=torch.float32).to(run.device)
    std = torch.tensor(model.std, dtype=torch.float32).to(run.device)
    for batch in track(loader, "references", "images", len(rows), enabled=run.bar, units=batch_images):
        for index, reason in batch["skipped"]:
            raise DataError(
                f"reference {row_name(refs.manifest.iloc[index])} cannot be read ({reason}); replace it or remove "
                "it from the reference folder"
            )
        images = normalize_images(batch["image"].to(run.device), mean, std)
        memory.add(model.reference_features(images, [words[i] for i in batch["index"].tolist()]))
    return memory


class FewShotInferer(Inferer):
    """Score with k normal references: the memory bank first, then the targets, each map fused with the model's.

    Plain models (trainable and training-free) are scored batch by batch as :class:`PlainInferer` does,
    transductive ones set by set as :class:`TransductiveInferer` does (the set-level map fused the same way).
    Tiled scoring (``tile=True``) is refused with references (:meth:`ScoreSettings.check`): a window's patches
    would be compared with patches of whole resized references, at another scale.

    Args:
        refs: the drawn references.
        words: the text class word of each reference row.
        transductive: score set by set.
        compile: ``torch.compile`` the backbone (plain models).
    """

    def __init__(
        self, refs: ReferenceSet, words: Sequence[str], *, transductive: bool = False, compile: bool = False
    ) -> None:
        self.refs = refs
        self.words = list(words)
        self.transductive = transductive
        self.compile = compile

    def __call__(self, model: AnomalyModel, run: ScoringRun) -> Iterator[HostBatch]:
        """Build the memory bank, then yield the fused results of ``run.todo``."""
        fusion = Fusion(build_memory(model, self.refs, self.words, run), fewshot_weight(model, self.refs))
        inner: Inferer = _FusedSets(fusion) if self.transductive else _FusedPlain(fusion, self.compile)
        yield from inner(model, run)


class _FusedPlain(PlainInferer):
    """:class:`PlainInferer` whose forward pass is the fused one."""

    def __init__(self, fusion: Fusion, compile: bool) -> None:
        super().__init__(compile=compile)
        self.fusion = fusion

    def infer(self, model: AnomalyModel, images: torch.Tensor, words: list[str]) -> InferenceBatch:
        zero_shot = None if model.needs_references else model(images, words)
        features = model.reference_features(images, words)
        return self.fusion.fuse(model, features, zero_shot, images.shape[-1])


class _FusedSets(TransductiveInferer):
    """:class:`TransductiveInferer` that also keeps each image's memory features and fuses the set-level map."""

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.fusion = fusion

    def batch_features(self, model: TransductiveAnomalyModel, images: torch.Tensor, words: list[str]) -> Features:
        own = {} if model.needs_references else model.forward_features(images)
        memory = {FEWSHOT_KEY + k: v for k, v in model.reference_features(images, words).items()}
        return {**own, **memory}

    def score_chunk(self, model: TransductiveAnomalyModel, features: Features, chunk: list[int]) -> InferenceBatch:
        own, memory = _split_features(features, chunk)
        zero_shot = None if model.needs_references else model.score_set(own, chunk)
        return self.fusion.fuse(model, memory, zero_shot, model.image_size)


def _split_features(features: Mapping[str, torch.Tensor], chunk: list[int]) -> tuple[Features, Features]:
    """The model's own set features (whole set) and the memory features of the ``chunk`` positions."""
    own = {k: v for k, v in features.items() if not k.startswith(FEWSHOT_KEY)}
    index = torch.tensor(chunk, dtype=torch.int64)
    memory = {
        k[len(FEWSHOT_KEY) :]: v.index_select(0, index.to(v.device))
        for k, v in features.items()
        if k.startswith(FEWSHOT_KEY)
    }
    return own, memory
