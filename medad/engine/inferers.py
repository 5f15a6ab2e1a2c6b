"""Inference strategies: one interface, three ways of turning images into native-size maps and image scores.

Like MONAI's :class:`~monai.inferers.Inferer`, an :class:`Inferer` is an object called with the model and the
inputs; here the inputs are a :class:`ScoringRun` (the manifest rows still to score, their text words, the
device) and the call yields :class:`~medad.engine.host_writes.HostBatch` results, which
:func:`medad.engine.scorer.score` writes and counts. The strategies:

- :class:`PlainInferer`: every image resized to the model input, ``batch_size`` images per forward pass, maps
  upsampled back to each image's native size on the device;
- :class:`TransductiveInferer`: a model that scores an image against the others of its scoring set (e.g.
  ``dinov3_mutual``): features of the whole set first, then the set's images scored against them;
- :class:`~medad.engine.tiling.TiledInferer`: native-size images window by window (``tile=True``);
- :class:`~medad.engine.fewshot.FewShotInferer`: either of the first two with k normal reference images, the
  model's map fused with a nearest-neighbour map against the references' patch features.

:func:`medad.engine.scorer.select_inferer` is the one place that picks one, from the model's kind and ``tile``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medad.engine.host_writes import HostBatch
from medad.engine.skipped import SkipLog, SkippingSubset, collate_skipping
from medad.utils.progress import track

if TYPE_CHECKING:
    from medad.models import AnomalyModel, TransductiveAnomalyModel
    from medad.models.base import Features, InferenceBatch


@dataclass(frozen=True)
class ScoringRun:
    """The inputs of one scoring pass, besides the model (already on ``device``, in eval mode).

    Attributes:
        manifest: every manifest row (row position = index), also rows already scored.
        todo: the manifest indices to score now.
        words: the text class word of every manifest row.
        skips: where an unreadable image is recorded and skipped.
        device: the device the model runs on.
        batch_size: images (or windows) per forward pass.
        num_workers: DataLoader workers.
        bar: show the progress bar (:func:`medad.utils.progress.track`).
    """

    manifest: pd.DataFrame
    todo: Sequence[int]
    words: Sequence[str]
    skips: SkipLog
    device: torch.device
    batch_size: int
    num_workers: int
    bar: bool


class Inferer(ABC):
    """A scoring strategy: ``inferer(model, run)`` yields the results of ``run.todo``, batch by batch."""

    @abstractmethod
    def __call__(self, model: AnomalyModel, run: ScoringRun) -> Iterator[HostBatch]:
        """Score ``run.todo`` with ``model``; each yielded batch holds native-size maps and image scores."""


def upsample_to(pixel_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize one (S,S) map to ``size`` = (H, W) on its own device, as float32."""
    return upsample_batch(pixel_map[None], [size])[0]


def upsample_batch(pixel_maps: torch.Tensor, sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Resize (B,S,S) maps to their native (H, W) sizes on their device: one interpolation per distinct size.

    The rows of a size group are gathered with an index copied from pinned memory without blocking (indexing with
    a Python list would copy from pageable memory, which waits for the GPU's queued work).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(i)
    out: list[torch.Tensor] = [pixel_maps[0]] * len(sizes)
    for (height, width), members in groups.items():
        rows = pixel_maps
        if len(members) < len(sizes):
            rows = pixel_maps.index_select(0, _device_index(members, pixel_maps))
        resized = F.interpolate(rows.float().unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)
        for j, i in enumerate(members):
            out[i] = resized[j, 0]
    return out


def _device_index(members: list[int], like: torch.Tensor) -> torch.Tensor:
    """``members`` as an int64 index on ``like``'s device, copied without making the host wait."""
    index = torch.tensor(members, dtype=torch.int64)
    if like.device.type == "cuda":
        return index.pin_memory().to(like.device, non_blocking=True)
    return index.to(like.device)


def _pad_to(images: torch.Tensor, words: list[str], size: int) -> tuple[torch.Tensor, list[str]]:
    """Repeat the last image and word up to ``size`` rows, so a compiled backbone always sees one batch shape
    (a short final batch would otherwise trigger a second compilation)."""
    missing = size - images.shape[0]
    if missing <= 0:
        return images, words
    return torch.cat([images, images[-1:].expand(missing, *images.shape[1:])]), words + [words[-1]] * missing


def model_input_dataset(model: AnomalyModel, manifest: pd.DataFrame) -> Dataset[Any]:
    """The manifest's images as uint8 samples resized to the model input (normalised later, on the device)."""
    from medad.data import make_dataset

    return make_dataset(manifest, model.image_size, model.mean, model.std, masks=False, uint8=True)


class PlainInferer(Inferer):
    """Images resized to the model input, ``batch_size`` per forward pass, maps upsampled to native size.

    Args:
        compile: ``torch.compile`` the backbone's forward with static shapes; a short final batch is padded to
            ``batch_size`` so that it needs no second compilation.
    """

    def __init__(self, compile: bool = False) -> None:
        self.compile = compile

    def __call__(self, model: AnomalyModel, run: ScoringRun) -> Iterator[HostBatch]:
        """Yield one :class:`HostBatch` per DataLoader batch; unreadable images are recorded in ``run.skips``."""
        from medad.data import normalize_images

        dev = run.device
        loader = DataLoader(
            SkippingSubset(model_input_dataset(model, run.manifest), run.todo, run.manifest),  # unreadable: skipped
            batch_size=run.batch_size,
            shuffle=False,
            num_workers=run.num_workers,
            pin_memory=dev.type == "cuda",
            prefetch_factor=4 if run.num_workers else None,
            collate_fn=collate_skipping,
        )
        if self.compile:
            model.compile()
        mean = torch.tensor(model.mean, dtype=torch.float32).to(dev)
        std = torch.tensor(model.std, dtype=torch.float32).to(dev)
        for batch in track(loader, "score", "images", len(run.todo), enabled=run.bar, units=batch_images):
            if run.skips.record(batch):
                continue
            indices = batch["index"].tolist()
            images = normalize_images(batch["image"].to(dev, non_blocking=True), mean, std)
            batch_words = [run.words[i] for i in indices]
            if self.compile:
                images, batch_words = _pad_to(images, batch_words, run.batch_size)
            outputs = self.infer(model, images, batch_words)
            maps = upsample_batch(outputs.pixel_scores[: len(indices)], batch["orig_size"].tolist())
            yield HostBatch(indices, outputs.image_scores[: len(indices)], maps)


    def infer(self, model: AnomalyModel, images: torch.Tensor, words: list[str]) -> InferenceBatch:
        """One forward pass over normalised model-size images: the model's own maps (the few-shot strategy adds
        its memory map here)."""
        return model(images, words)


def batch_images(batch: Mapping[str, Any]) -> int:
    """How many images a collated batch stands for: the readable ones and the skipped ones (for the bar)."""
    return len(batch.get("index", [])) + len(batch.get("skipped", []))


def scoring_sets(manifest: pd.DataFrame) -> dict[str, list[int]]:
    """The scoring sets of a transductive model: manifest indices grouped by (``dataset``, ``class_name``)."""
    columns = [c for c in ("dataset", "class_name") if c in manifest.columns]
    keys = manifest[columns].astype(str).agg("\x1f".join, axis=1).tolist() if columns else [""] * len(manifest)
    sets: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        sets.setdefault(key, []).append(i)
    return sets


class TransductiveInferer(Inferer):
    """Score a transductive model (e.g. ``dinov3_mutual``), one scoring set at a time.

    A scoring set is every manifest row with the same (``dataset``, ``class_name``), also rows outside ``todo``
    (an image is scored against all the others of its set, so a resumed or sharded run gives the same scores).
    Pass 1 runs ``model.forward_features`` over the whole set in batches; pass 2 calls
    ``model.score_set(features, positions)`` for the set's not-yet-stored images, ``batch_size`` at a time. An
    image that cannot be read is recorded in ``run.skips`` and left out of its set; the others are scored against
    the rest of the set.
    """

    def __call__(self, model: AnomalyModel, run: ScoringRun) -> Iterator[HostBatch]:
        """Yield the set's query images ``batch_size`` at a time, set after set (in sorted set order)."""
        from medad.models import TransductiveAnomalyModel

        if not isinstance(model, TransductiveAnomalyModel):
            raise TypeError(f"{type(model).__name__} is not a TransductiveAnomalyModel")

        dataset = model_input_dataset(model, run.manifest)
        sets = scoring_sets(run.manifest)
        pending = set(run.todo)
        wanted = sorted(key for key, members in sets.items() if pending.intersection(members))
        for key in track(wanted, "score", "image sets", len(wanted), enabled=run.bar):
            members, features, sizes = self._set_features(model, dataset, sets[key], run)
            if not members:  # no image of the set could be read: all recorded in run.skips
                continue
            query = [j for j, i in enumerate(members) if i in pending]
            for start in range(0, len(query), run.batch_size):
                chunk = query[start : start + run.batch_size]
                outputs = self.score_chunk(model, features, chunk)
                maps = upsample_batch(outputs.pixel_scores, [sizes[j] for j in chunk])
                yield HostBatch([members[j] for j in chunk], outputs.image_scores, maps)

    def batch_features(self, model: TransductiveAnomalyModel, images: torch.Tensor, words: list[str]) -> Features:
        """Pass 1 on one batch of a set: the model's features (the few-shot strategy adds its memory features)."""
        return model.forward_features(images)

    def score_chunk(self, model: TransductiveAnomalyModel, features: Features, chunk: list[int]) -> InferenceBatch:
        """Pass 2: the set's images at positions ``chunk`` scored against the whole set."""
        return model.score_set(features, chunk)

    def _set_features(
        self, model: TransductiveAnomalyModel, dataset: Any, members: list[int], run: ScoringRun
    ) -> tuple[list[int], dict[str, torch.Tensor], list[list[int]]]:
        """Pass 1: the readable images of one set (an unreadable one is recorded in ``run.skips`` and the others
        are scored against the rest of the set), their features and their native sizes."""
        from medad.data import normalize_images

        loader = DataLoader(
            SkippingSubset(dataset, members, run.manifest),
            batch_size=run.batch_size,
            num_workers=run.num_workers,
            collate_fn=collate_skipping,
        )
        readable: list[int] = []
        parts: list[dict[str, torch.Tensor]] = []
        sizes: list[list[int]] = []
        for batch in loader:
            if run.skips.record(batch):
                continue
            images = normalize_images(batch["image"].to(run.device), model.mean, model.std)
            indices = batch["index"].tolist()
            parts.append(self.batch_features(model, images, [run.words[i] for i in indices]))
            readable += indices
            sizes += batch["orig_size"].tolist()
        if not parts:
            return [], {}, []
        return readable, {name: torch.cat([p[name] for p in parts]) for name in parts[0]}, sizes
