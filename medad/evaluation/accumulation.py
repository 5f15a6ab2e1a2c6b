"""One pass over the images: exact streaming accumulators and per-image values, class by class in chunks.

Masks are read once at native resolution (or resized to the model's, :mod:`medad.evaluation.resolution`) and
labelled once; each model's maps are read chunk by chunk from its predictions store and fed to the exact pixel
accumulators (:class:`medad.metrics.PixelMetrics`) and to the per-image histograms the bootstrap resamples
(:class:`medad.stats.PixelHistograms`). :class:`Accumulated` then gives the exact point estimates and the
bootstrap statistics of any scope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medad.engine.predictions import PredictionReader
from medad.errors import DataError
from medad.evaluation.resolution import resize_map, resize_mask
from medad.evaluation.rows import PIXEL_METRICS, SEG_METRICS
from medad.metrics import ImageMetrics, NotApplicable, PixelMetrics, component_sizes, dice_iou, mean_ignoring_na
from medad.stats import PixelHistograms, image_statistic, mean_statistic

ScopeKey = tuple[str, str]
"""(dataset, class_name)."""


@dataclass
class Scope:
    """What one model accumulates for one (dataset, class): the exact pixel metrics and the rows it holds."""

    pixel: PixelMetrics
    rows: list[int] = field(default_factory=list)


Predictions = PredictionReader | Mapping[str, PredictionReader]
"""One model's predictions: a reader over the whole manifest, or per dataset a reader over that dataset's rows (in
manifest order; a few-shot run scores each target with its own references into its own folder)."""


def covered(predictions: Predictions, datasets: list[str]) -> list[str]:
    """The datasets these predictions cover."""
    if isinstance(predictions, PredictionReader):
        return list(datasets)
    return [d for d in datasets if d in predictions]


def _positions(manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per dataset, the manifest rows it holds (ascending)."""
    names = manifest["dataset"].astype(str).to_numpy()
    return {str(d): np.flatnonzero(names == d) for d in np.unique(names)}


def iter_maps(predictions: Predictions, dataset: str, rows: np.ndarray, positions: Mapping[str, np.ndarray]) -> Any:
    """``(manifest row, map)`` of ``rows`` (ascending, all of ``dataset``) from these predictions."""
    if isinstance(predictions, PredictionReader):
        return predictions.iter_maps(rows)
    local = np.searchsorted(positions[dataset], rows)
    return ((int(g), m) for g, (_, m) in zip(rows, predictions[dataset].iter_maps(local), strict=True))


def image_scores(predictions: Predictions, n: int, positions: Mapping[str, np.ndarray]) -> np.ndarray:
    """The image score of every manifest row (NaN where these predictions do not cover the row's dataset)."""
    if isinstance(predictions, PredictionReader):
        return predictions.image_scores[np.searchsorted(predictions.indices, np.arange(n))]
    out = np.full(n, np.nan)
    for dataset, reader in predictions.items():
        rows = positions.get(dataset, np.zeros(0, np.int64))
        out[rows] = reader.image_scores[np.searchsorted(reader.indices, np.arange(rows.size))]
    return out


@dataclass
class Accumulated:
    """Everything the rows, intervals and comparisons of an evaluation are computed from.

    Attributes:
        manifest: the evaluated manifest (row position = prediction index).
        labels: 0/1 per row, -1 where unknown.
        groups: the resampling cluster of each row (``group_id``, else the row itself).
        models: model labels, in order.
        keys: the (dataset, class) scopes, sorted.
        scopes: per (model, scope key) the accumulated pixel metrics.
        image_scores: per model, the image score of every row.
        per_image: per model, ``max`` pixel score, ``dice`` and ``iou`` of every row, and the pixel counts they
            come from (``inter``: predicted and in the mask, ``pred``: predicted, ``true``: in the mask; the
            volumes' 3-D Dice sums them), NaN where not computed.
        hists: per (model, dataset) the pixel histograms and the manifest row of each histogram entry.
        fpr_limit: AUPRO integration limit.
    """

    manifest: pd.DataFrame
    labels: np.ndarray
    groups: np.ndarray
    models: list[str]
    keys: list[ScopeKey]
    scopes: dict[tuple[str, ScopeKey], Scope]
    image_scores: dict[str, np.ndarray]
    per_image: dict[str, dict[str, np.ndarray]]
    hists: dict[tuple[str, str], tuple[PixelHistograms, np.ndarray]]
    fpr_limit: float
    covers: dict[str, list[str]] = field(default_factory=dict)

    def covered(self, model: str, dataset: str) -> bool:
        """Whether ``model`` has predictions of ``dataset`` (a few-shot run covers the targets with references)."""
        return dataset in self.covers.get(model, [dataset])

    @property
    def datasets(self) -> list[str]:
        """The datasets, sorted."""
        return sorted({d for d, _ in self.keys})

    def classes(self, dataset: str) -> list[str]:
        """The classes of ``dataset``, in scope order."""
        return [c for d, c in self.keys if d == dataset]

    def rows_of(self, model: str, dataset: str, classes: list[str]) -> np.ndarray:
        """The labelled manifest rows of ``classes`` of ``dataset`` that ``model`` was evaluated on, sorted."""
        return np.sort(np.concatenate([np.asarray(self.scopes[(model, (dataset, c))].rows, np.int64) for c in classes]))

    def pixel(self, model: str, dataset: str, classes: list[str]) -> PixelMetrics:
        """The exact pixel accumulator of ``classes`` (merged when several)."""
        parts = [self.scopes[(model, (dataset, c))].pixel for c in classes]
        return parts[0] if len(parts) == 1 else PixelMetrics.merged(parts)

    def image(self, model: str, rows: np.ndarray) -> ImageMetrics:
        """The image-level metrics of ``rows``."""
        img = ImageMetrics()
        img.update(self.image_scores[model][rows], self.labels[rows])
        return img

    def point(self, model: str, dataset: str, classes: list[str]) -> dict[str, float | NotApplicable]:
        """The exact value of every metric over ``classes`` (Dice / IoU: mean over the abnormal images)."""
        rows = self.rows_of(model, dataset, classes)
        out = dict(self.image(model, rows).compute())
        out.update({k: v for k, v in self.pixel(model, dataset, classes).compute().items() if k in PIXEL_METRICS})
        abnormal = rows[self.labels[rows] == 1]
        for name in SEG_METRICS:
            out[name] = (
                mean_ignoring_na(self.per_image[model][name][abnormal])
                if abnormal.size
                else NotApplicable("no abnormal images")
            )
        return out

    def groups_for(self, rows: np.ndarray) -> list[str] | None:
        """The clusters of ``rows`` when some cluster holds more than one image, else ``None`` (resample images)."""
        g = self.groups[rows]
        return g.tolist() if np.unique(g).size < g.size else None

    def statistic(self, model: str, dataset: str, rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Bootstrap statistic over ``rows`` (labelled images of one scope) with outputs in ALL_METRICS order."""
        img = image_statistic(self.image_scores[model][rows], self.labels[rows] == 1)
        hist, positions = self.hists[(model, dataset)]
        order = np.argsort(positions)
        pix = hist.statistic(order[np.searchsorted(positions[order], rows)], self.fpr_limit)
        abnormal = self.labels[rows] == 1
        segs = [mean_statistic(np.where(abnormal, self.per_image[model][name][rows], np.nan)) for name in SEG_METRICS]

        def stat(w: np.ndarray) -> np.ndarray:
            parts = [img(w), pix(w)]
            parts.extend(s(w) for s in segs)
            return np.concatenate(parts, axis=1)

        return stat


@dataclass(frozen=True)
class PassSettings:
    """How :func:`accumulate` reads and scores the pixels."""

    threshold: float
    fpr_limit: float
    connectivity: int
    chunk_size: int
    memory_limit_bytes: int
    size: int | None  # the model resolution, or None for native


def accumulate(
    manifest: pd.DataFrame,
    readers: Mapping[str, Predictions],
    mask_reader: Callable[[Mapping[str, Any]], np.ndarray],
    settings: PassSettings,
) -> Accumulated:
    """Read every mask and map once and accumulate every model's metrics (``manifest`` indexed 0..N-1; a model
    with predictions per dataset is accumulated on those datasets only)."""
    n = len(manifest)
    models = list(readers)
    label = manifest["label"].astype("Int64")
    groups = manifest["group_id"].astype(str).to_numpy() if "group_id" in manifest else np.arange(n).astype(str)
    keys = sorted({(str(d), str(c)) for d, c in zip(manifest["dataset"], manifest["class_name"], strict=True)})
    positions = _positions(manifest)
    covers = {m: covered(readers[m], sorted(positions)) for m in models}
    limit = max(settings.memory_limit_bytes // max(len(models) * len(keys), 1), 1 << 26)
    acc = Accumulated(
        manifest=manifest,
        labels=label.fillna(-1).to_numpy(dtype=np.int64),
        groups=groups,
        models=models,
        keys=keys,
        scopes={
            (m, key): Scope(PixelMetrics(settings.fpr_limit, settings.connectivity, memory_limit_bytes=limit))
            for m in models
            for key in keys
            if key[0] in covers[m]
        },
        image_scores={m: image_scores(readers[m], n, positions) for m in models},
        per_image={m: {k: np.full(n, np.nan) for k in ("max", "dice", "iou", "inter", "pred", "true")} for m in models},
        hists={},
        fpr_limit=settings.fpr_limit,
        covers=covers,
    )
    hists: dict[tuple[str, str], tuple[PixelHistograms, list[int]]] = {
        (m, d): (PixelHistograms(), []) for m in models for d in covers[m]
    }
    labelled = label.notna().to_numpy()
    for key in keys:
        idx = np.flatnonzero(
            (manifest["dataset"].astype(str) == key[0]).to_numpy()
            & (manifest["class_name"].astype(str) == key[1]).to_numpy()
        )
        for start in range(0, idx.size, settings.chunk_size):
            chunk = idx[start : start + settings.chunk_size]
            masks = {int(i): mask_reader(manifest.iloc[int(i)].to_dict()) for i in chunk if labelled[i]}
            masks = {i: resize_mask(mk, settings.size) for i, mk in masks.items()}
            comps = {i: component_sizes(mk, settings.connectivity) for i, mk in masks.items()}
            for m in (m for m in models if key[0] in covers[m]):
                maps = iter_maps(readers[m], key[0], chunk, positions)
                _add_chunk(acc, hists, m, key, maps, masks, comps, settings)
    acc.hists = {k: (h, np.asarray(pos, dtype=np.int64)) for k, (h, pos) in hists.items()}
    return acc


def _add_chunk(
    acc: Accumulated,
    hists: dict[tuple[str, str], tuple[PixelHistograms, list[int]]],
    model: str,
    key: ScopeKey,
    maps_of: Any,
    masks: dict[int, np.ndarray],
    comps: dict[int, Any],
    settings: PassSettings,
) -> None:
    """Feed one chunk of one model's maps to its accumulators and per-image values."""
    scope = acc.scopes[(model, key)]
    per_image = acc.per_image[model]
    maps, sizes, ncomp = [], [], []
    for i, stored in maps_of:
        pixel_map = resize_map(stored, settings.size)
        per_image["max"][i] = float(pixel_map.max()) if pixel_map.size else np.nan
        if i not in masks:
            continue
        if pixel_map.shape != masks[i].shape:
            manifest = acc.manifest
            raise DataError(
                f"{model}: map of {manifest.at[i, 'case_id'] if 'case_id' in manifest else i} is "
                f"{pixel_map.shape} but its mask is {masks[i].shape}; predictions must be at native size"
            )
        seg = dice_iou(pixel_map, masks[i], settings.threshold)
        per_image["dice"][i], per_image["iou"][i] = seg["dice"][0], seg["iou"][0]
        predicted = pixel_map >= np.float32(settings.threshold)
        per_image["inter"][i] = np.count_nonzero(predicted & masks[i])
        per_image["pred"][i], per_image["true"][i] = np.count_nonzero(predicted), np.count_nonzero(masks[i])
        maps.append(pixel_map)
        sizes.append(comps[i][0][0])
        ncomp.append(int(comps[i][1][0]))
        scope.rows.append(i)
    if maps:
        scope.pixel.update(maps, None, sizes, ncomp)
        hist, positions = hists[(model, key[0])]
        hist.update(maps, sizes, ncomp)
        positions.extend(scope.rows[-len(maps) :])
