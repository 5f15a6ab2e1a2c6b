"""Volume-level results: a 3-D image (DICOM series, multi-frame object, NIfTI file) as one case.

The manifest has one row per slice; :func:`medad.data.series.group_volumes` groups the rows back into volumes in
physical order. Per volume and model:

* **volume score**: the policy :class:`VolumeScore` names, over its slices' image scores - ``max`` (default: the
  most abnormal slice) or ``topk_mean`` (the mean of the ``k`` highest slice scores, default k = 3; all slices
  when the volume has fewer);
* **label**: abnormal (1) when any slice is labelled abnormal, normal (0) when every slice is labelled normal,
  unknown otherwise;
* **Dice / IoU in 3-D**: the overlap of ``map >= threshold`` with the masks summed over all slices of the volume
  (so a slice with no lesion and no prediction counts, and one large slice weighs more than a small one);
  undefined when a slice has no mask read (an unknown label) or when the volume has neither lesion nor prediction.

From these, per model and dataset, the image-level metrics over volumes (``image_auroc``, ``image_ap``,
``image_f1_max``) and the mean 3-D Dice / IoU over abnormal volumes, as ``metrics.json`` rows with
``class_name`` ``__volumes__`` and ``aggregate`` ``volume``; their bootstrap intervals resample whole volumes,
stratified by volume label. Pixel metrics are not repeated per volume: every pixel is already counted once in
the slice scopes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medad.data.series import Volume
from medad.errors import ConfigError
from medad.evaluation.accumulation import Accumulated
from medad.evaluation.intervals import Interval
from medad.evaluation.rows import IMAGE_METRICS, SEG_METRICS, VOLUMES, MetricRow
from medad.metrics import ImageMetrics, NotApplicable, mean_ignoring_na
from medad.stats import bootstrap_ci, image_statistic, mean_statistic

VOLUME_POLICIES = ("max", "topk_mean")
DEFAULT_TOPK = 3
"""The k of ``topk_mean`` when none is given."""
VOLUME_METRICS = IMAGE_METRICS + SEG_METRICS
"""The metrics of a volume row, in the order of its bootstrap statistic."""
PER_VOLUME_COLUMNS = (
    "model",
    "dataset",
    "volume_id",
    "n_slices",
    "label",
    "volume_score",
    "dice",
    "iou",
    "random_weights",
)
"""The columns of ``per_volume.csv``, in order."""
LABEL_RULE = "abnormal when any slice is labelled abnormal, normal when every slice is labelled normal, else unknown"
DICE_RULE = (
    "3-D: map >= threshold against the masks summed over all slices of the volume; mean over abnormal volumes"
)


@dataclass(frozen=True)
class VolumeScore:
    """How a volume's score comes from its slices' image scores.

    Attributes:
        policy: ``max`` (the highest slice score) or ``topk_mean`` (mean of the ``k`` highest).
        k: slices averaged by ``topk_mean`` (all slices when the volume has fewer).
    """

    policy: str = "max"
    k: int = DEFAULT_TOPK

    def __post_init__(self) -> None:
        if self.policy not in VOLUME_POLICIES:
            raise ConfigError(
                f"volume score policy {self.policy!r} is unknown; choose max or topk_mean (e.g. topk_mean:3)"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"volume score k={self.k!r} must be a whole number >= 1, e.g. topk_mean:3")

    @classmethod
    def parse(cls, spec: str, option: str = "volume score") -> VolumeScore:
        """``max``, ``topk_mean`` or ``topk_mean:K``; anything else is a :class:`ConfigError` naming ``option``."""
        match = re.fullmatch(r"max|(topk_mean)(?::([1-9]\d*))?", spec.strip())
        if match is None:
            raise ConfigError(
                f"{option} {spec!r} is not a volume score policy; use max, topk_mean or topk_mean:K with K >= 1 "
                f"(default k = {DEFAULT_TOPK})"
            )
        if match[1] is None:
            return cls("max")
        return cls("topk_mean", int(match[2]) if match[2] else DEFAULT_TOPK)

    def settings(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``settings.volumes.score``."""
        if self.policy == "max":
            return {"policy": "max", "k": None, "definition": "the highest slice image score"}
        return {
            "policy": "topk_mean",
            "k": self.k,
            "definition": f"mean of the {self.k} highest slice image scores (all slices when fewer)",
        }

    def score(self, slice_scores: np.ndarray) -> float:
        """The volume score of one volume's slice scores."""
        values = np.asarray(slice_scores, dtype=np.float64)
        if self.policy == "max":
            return float(values.max())
        return float(np.sort(values)[::-1][: self.k].mean())


@dataclass
class VolumeResults:
    """Per model, one table of volumes (the rows of ``per_volume.csv``, without the model columns)."""

    tables: dict[str, pd.DataFrame]

    @property
    def empty(self) -> bool:
        """Whether the manifest held no volume."""
        return not self.tables or all(t.empty for t in self.tables.values())


def volume_label(labels: np.ndarray) -> int:
    """A volume's label from its slices' labels (-1 unknown): 1 if any is 1, 0 if all are 0, else -1."""
    if (labels == 1).any():
        return 1
    return 0 if labels.size and (labels == 0).all() else -1


def _overlap(acc: Accumulated, model: str, indices: np.ndarray) -> tuple[float, float]:
    """3-D Dice and IoU of one volume from its slices' overlap counts (NaN when undefined)."""
    counts = acc.per_image[model]
    inter, pred, true = (counts[k][indices] for k in ("inter", "pred", "true"))
    if np.isnan(inter).any():  # a slice without a mask: the volume's overlap is unknown
        return float("nan"), float("nan")
    i, sizes = float(inter.sum()), float(pred.sum() + true.sum())
    if sizes == 0:
        return float("nan"), float("nan")
    return 2 * i / sizes, i / (sizes - i)


def volume_results(acc: Accumulated, volumes: Sequence[Volume], scoring: VolumeScore) -> VolumeResults:
    """Every model's per-volume table: dataset, volume id, slices, label, volume score, 3-D Dice and IoU."""
    datasets = acc.manifest["dataset"].astype(str).to_numpy()
    tables = {}
    for model in acc.models:
        records = []
        for volume in volumes:
            indices = np.asarray(volume.indices, dtype=np.int64)
            dice, iou = _overlap(acc, model, indices)
            records.append(
                {
                    "dataset": datasets[indices[0]],
                    "volume_id": volume.volume_id,
                    "n_slices": int(indices.size),
                    "label": volume_label(acc.labels[indices]),
                    "volume_score": scoring.score(acc.image_scores[model][indices]),
                    "dice": dice,
                    "iou": iou,
                }
            )
        tables[model] = pd.DataFrame.from_records(records, columns=list(PER_VOLUME_COLUMNS[1:-1]))
    return VolumeResults(tables)


def _point(table: pd.DataFrame) -> dict[str, float | NotApplicable]:
    """The exact volume-level metrics of labelled volumes."""
    image = ImageMetrics()
    image.update(table["volume_score"].to_numpy(np.float64), table["label"].to_numpy(np.int64))
    out: dict[str, float | NotApplicable] = {
        k: NotApplicable(v.reason.replace("image", "volume")) if isinstance(v, NotApplicable) else v
        for k, v in image.compute().items()
    }  # the reasons speak of volumes: "no normal volumes"
    abnormal = table[table["label"] == 1]
    for name in SEG_METRICS:
        out[name] = (
            mean_ignoring_na(abnormal[name].to_numpy(np.float64))
            if len(abnormal)
            else NotApplicable("no abnormal volumes")
        )
    return out


def _intervals(
    table: pd.DataFrame, exact: Mapping[str, float | NotApplicable], ci: Mapping[str, Any]
) -> dict[str, Interval]:
    """Bootstrap intervals resampling whole volumes, stratified by volume label (empty without a bootstrap)."""
    if int(ci["n_resamples"]) <= 0 or table.empty:
        return {}
    labels = table["label"].to_numpy(np.int64)
    image = image_statistic(table["volume_score"].to_numpy(np.float64), labels == 1)
    segs = [mean_statistic(np.where(labels == 1, table[name].to_numpy(np.float64), np.nan)) for name in SEG_METRICS]

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.concatenate([image(w), *(s(w) for s in segs)], axis=1)

    est = np.array([np.nan if isinstance(exact[k], NotApplicable) else float(exact[k]) for k in VOLUME_METRICS])
    res = bootstrap_ci(
        statistic,
        len(table),
        n_resamples=int(ci["n_resamples"]),
        seed=int(ci["seed"]),
        strata=labels.astype(str).tolist(),
        stratified_by="label",
        method=ci["method"],
        level=float(ci["level"]),
        estimate=est,
        bounds=(0.0, 1.0),
    )
    return {k: (r.ci_low, r.ci_high) for k, r in zip(VOLUME_METRICS, res, strict=True)}


def volume_metric_rows(
    results: VolumeResults, metrics: Sequence[str], ci: Mapping[str, Any], random_weights: Mapping[str, bool]
) -> list[dict[str, Any]]:
    """Per model and dataset the ``__volumes__`` rows of ``metrics.json`` (labelled volumes only)."""
    rows = []
    wanted = [m for m in VOLUME_METRICS if m in metrics]
    for model, table in results.tables.items():
        for dataset, part in table.groupby("dataset", sort=True):
            labelled = part[part["label"] >= 0].reset_index(drop=True)
            if labelled.empty:
                continue
            exact = _point(labelled)
            cis = _intervals(labelled, exact, ci)
            for name in wanted:
                row = _row(model, str(dataset), name, exact[name], cis, len(labelled), random_weights[model])
                rows.append(row.to_dict())
    return rows


def _row(
    model: str,
    dataset: str,
    metric: str,
    value: float | NotApplicable,
    cis: Mapping[str, Interval],
    n_volumes: int,
    random_weights: bool,
) -> MetricRow:
    """One ``__volumes__`` metrics row (``n_images`` counts volumes)."""
    if isinstance(value, NotApplicable):
        point, low, high, reason = None, None, None, value.reason
    else:
        point, reason = float(value), None
        low, high = cis.get(metric, (None, None))
    return MetricRow(
        model=model,
        dataset=dataset,
        class_name=VOLUMES,
        metric=metric,
        value=point,
        ci_low=low,
        ci_high=high,
        n_images=n_volumes,
        aggregate="volume",
        status="ok" if reason is None else "not_applicable",
        reason=reason,
        random_weights=bool(random_weights),
    )


def per_volume_table(results: VolumeResults, random_weights: Mapping[str, bool]) -> pd.DataFrame:
    """``per_volume.csv``: one row per volume per model (:data:`PER_VOLUME_COLUMNS`); label ``<NA>`` if unknown."""
    frames = []
    for model, table in results.tables.items():
        frame = table.assign(model=model, random_weights=bool(random_weights[model]))
        frame["label"] = frame["label"].astype("Int64").mask(frame["label"] < 0)
        frames.append(frame[list(PER_VOLUME_COLUMNS)])
    if not frames:
        return pd.DataFrame(columns=list(PER_VOLUME_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def volume_settings(scoring: VolumeScore, volumes: Sequence[Volume]) -> dict[str, Any]:
    """``settings.volumes`` of ``metrics.json``: the score policy, label and Dice rules, and the volume count."""
    return {
        "score": scoring.settings(),
        "label": LABEL_RULE,
        "dice_iou": DICE_RULE,
        "n_volumes": len(volumes),
        "resampling_unit": "volume (stratified by volume label)",
    }
