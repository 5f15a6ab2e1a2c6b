"""Evaluate stored predictions against a manifest and write the evaluation folder (see docs/architecture.md).

One pass over the images, class by class in chunks: masks are read once at native resolution and labelled once;
each model's maps are read chunk by chunk from its predictions store and fed to the exact streaming
accumulators and to the per-image histograms used by the bootstrap. Output files:

* ``metrics.json`` - per model, dataset and class (plus ``__mean__``, the class mean, and ``__pooled__``, all images
  pooled; each row names its ``aggregate``) each metric with its bootstrap CI, or ``not_applicable`` with the
  reason; ``settings.random_weights`` maps every model to whether its frozen weights were random (read from its
  predictions' ``meta.json``), and every row repeats its model's flag; a row whose model was trained on data that
  include its dataset (a protocol's ``allow_not_zero_shot``) says so in ``not_zero_shot`` ("not zero-shot
  (trained on ...)"; ``None`` otherwise), and ``settings.not_zero_shot`` maps model -> dataset -> that mark;
* ``per_image.csv`` - per image and model: image score, max pixel score, Dice and IoU at the threshold, and the
  model's ``random_weights`` flag;
* ``curves.json`` - image-level ROC/PR and pixel-level ROC/PR/PRO curves (<= 512 points each);
* ``comparisons.json`` - paired comparisons of every model pair, with multiple-comparison-adjusted p-values (and
  ``not_zero_shot``: which of the two models is not zero-shot on the dataset, or ``None``);
* ``per_volume.csv`` - only when the manifest holds volumes (DICOM series, multi-frame objects, NIfTI files):
  per volume and model its volume score, label and 3-D Dice / IoU (:mod:`~medad.evaluation.volumes`), whose
  volume-level metrics are the ``__volumes__`` rows of ``metrics.json``.

Images with an unknown label (``<NA>``) appear in ``per_image.csv`` only. The steps live in their own modules:
:mod:`~medad.evaluation.accumulation` (the pass over the images), :mod:`~medad.evaluation.intervals` (bootstrap
CIs), :mod:`~medad.evaluation.comparisons` (paired tests), :mod:`~medad.evaluation.rows` (the typed rows).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medad.engine.features import inputs_fingerprint, manifest_fingerprint
from medad.engine.predictions import PredictionReader, predictions_random_weights
from medad.errors import ConfigError, DataError, DataWarning
from medad.evaluation.accumulation import Accumulated, PassSettings, Predictions, accumulate
from medad.evaluation.comparisons import compare, model_pairs
from medad.evaluation.fewshot import FEWSHOT_NOTE, FewShotRun, fewshot_rows
from medad.evaluation.intervals import DEFAULT_CI, Interval, Intervals
from medad.evaluation.paper_view import paper_view, study_marks
from medad.evaluation.recorded import record_predictions
from medad.evaluation.resolution import model_resolution, resolution_settings
from medad.evaluation.rows import (
    AGGREGATE_NOTES,
    AGGREGATES,
    ALL_METRICS,
    IMAGE_METRICS,
    PER_IMAGE_COLUMNS,
    MetricRow,
    round_sig,
)
from medad.evaluation.volumes import (
    VolumeResults,
    VolumeScore,
    per_volume_table,
    volume_metric_rows,
    volume_results,
    volume_settings,
)
from medad.metrics import IMPLEMENTATION_VERSION, MEAN, POOLED, NotApplicable, mean_over_classes
from medad.stats.defaults import check_ci_settings
from medad.utils.io import write_json_atomic, write_text_atomic


def evaluate(
    predictions: Mapping[str, str | Path | Mapping[str, str | Path]],
    manifest: pd.DataFrame,
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = ALL_METRICS,
    ci: Mapping[str, Any] | None = None,
    comparisons: str | Sequence[tuple[str, str]] | None = "all",
    correction: str = "holm",
    threshold: float = 0.5,
    fpr_limit: float = 0.3,
    connectivity: int = 8,
    chunk_size: int = 32,
    memory_limit_bytes: int = 1 << 30,
    mask_reader: Callable[[Mapping[str, Any]], np.ndarray] | None = None,
    resolution: str = "native",
    volume_score: str | VolumeScore = "max",
    fewshot: Mapping[str, FewShotRun] | None = None,
    dataset_titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Compute metrics, CIs, curves and comparisons for several models' predictions on one manifest.

    Args:
        predictions: model name -> predictions folder (``medad.engine.predictions`` layout); every manifest row
            must have a prediction in every folder. A model may instead give ``{dataset: folder}``, each folder
            scored on that dataset's rows in manifest order (a few-shot run: one folder per target); it is then
            evaluated on those datasets only.
        manifest: the manifest (``medad.data`` contract); its row position is the prediction index.
        out_dir: evaluation folder to write.
        metrics: subset of :data:`~medad.evaluation.rows.ALL_METRICS`.
        ci: bootstrap settings ``n_resamples``, ``seed``, ``method`` (``bca``/``percentile``), ``level``; missing
            keys take the defaults of :mod:`medad.stats.defaults`; ``{"n_resamples": 0}`` turns CIs off.
        comparisons: ``"all"`` model pairs, an explicit list of ``(model_a, model_b)``, or None.
        correction: ``holm`` or ``bh`` over all comparisons written (one family).
        threshold: score threshold of the per-image Dice / IoU.
        fpr_limit: AUPRO integration limit.
        connectivity: AUPRO component connectivity (8 as MVTec AD, or 4).
        chunk_size: images read per chunk.
        memory_limit_bytes: total in-memory budget of the exact pixel accumulators before spilling to disk.
        mask_reader: function reading a manifest row's mask (default ``medad.data.read_mask``).
        resolution: ``native`` (maps against masks at each image's size) or ``model`` (both resized to the
            model's input size, as the released code evaluates; :mod:`medad.evaluation.resolution`).
        volume_score: how a volume's score comes from its slices' image scores: ``max``, ``topk_mean`` or
            ``topk_mean:K`` (:class:`~medad.evaluation.volumes.VolumeScore`; default k = 3).
        fewshot: few-shot model label -> its :class:`~medad.evaluation.fewshot.FewShotRun` (base model, shots,
            draw): ``metrics.json`` then holds ``fewshot`` rows, per shot count the mean over the draws with a
            two-level bootstrap interval (:mod:`medad.evaluation.fewshot`).
        dataset_titles: dataset name -> how reports name it (``medad.data.registry.dataset_title`` of its kind,
            which says the source: ``BrainMRI (Kaggle)``); default: the title of each name that is a dataset kind.

    Returns:
        ``{"settings", "rows", "comparisons", "out_dir"}`` - the content of metrics.json and comparisons.json.
    """
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
    if not predictions:
        raise ConfigError("no predictions to evaluate")
    scoring = volume_score if isinstance(volume_score, VolumeScore) else VolumeScore.parse(volume_score)
    ci_cfg = {**DEFAULT_CI, **(ci or {})}
    names = ("ci['n_resamples']", "ci['level']", "ci['method']")
    check_ci_settings(ci_cfg["n_resamples"], ci_cfg["level"], ci_cfg["method"], names=names)
    models = list(predictions)
    from medad.data.labels import check_evaluable

    reads_mask_paths = mask_reader is None
    if mask_reader is None:
        from medad.data import read_mask

        mask_reader = read_mask
    readers = {name: _readers(folder) for name, folder in predictions.items()}
    metas = {f"{name}/{part}": reader.meta for name, parts in readers.items() for part, reader in _parts(parts)}
    random_weights = {
        name: any(predictions_random_weights(r.meta) for _, r in _parts(parts)) for name, parts in readers.items()
    }
    size = model_resolution(resolution, metas)
    manifest = manifest.reset_index(drop=True)
    if reads_mask_paths:  # no label and no mask anywhere: refused, not a table of n/a
        check_evaluable(manifest)
    _check_predictions(readers, manifest)
    from medad.data.series import group_volumes, volume_table

    volumes = group_volumes(manifest)
    acc = accumulate(
        manifest,
        readers,
        mask_reader,
        PassSettings(threshold, fpr_limit, connectivity, chunk_size, memory_limit_bytes, size),
    )
    settings: dict[str, Any] = {
        "metrics": list(metrics),
        "implementation": IMPLEMENTATION_VERSION,
        "fpr_limit": fpr_limit,
        "connectivity": connectivity,
        "threshold": threshold,
        "resolution": resolution_settings(resolution, size),
        "ci": {
            "method": ci_cfg["method"],
            "n_resamples": int(ci_cfg["n_resamples"]),
            "seed": int(ci_cfg["seed"]),
            "level": ci_cfg["level"],
            "pixel_metrics": "per-image histograms on a shared <=2048-bin grid, shifted to the exact estimate",
        },
        "correction": correction,
        "models": models,
        "dataset_titles": _titles(manifest, dataset_titles),
        "random_weights": random_weights,
        "aggregates": {k: note for k, note in AGGREGATE_NOTES.items() if k != "volume" or volumes},
        "dice_iou_aggregate": "mean over abnormal images (label 1); per image N/A when mask and prediction are empty",
        "volumes": volume_settings(scoring, volumes),
    }
    intervals = Intervals(ci_cfg, list(metrics))
    rows, curves = _rows_and_curves(acc, intervals, list(metrics), random_weights)
    by_volume = volume_results(acc, volumes, scoring)
    rows += volume_metric_rows(by_volume, list(metrics), ci_cfg, random_weights)
    marks = _not_zero_shot(readers)
    _mark_rows(rows, marks)
    if marks:  # only then: zero-shot evaluations keep their settings
        settings["not_zero_shot"] = marks
    comps = compare(acc, intervals, model_pairs(models, comparisons), list(metrics), correction)
    _mark_comparisons(comps, marks)
    settings["ci"].update(intervals.used_settings())
    if any(random_weights.values()):
        flagged = ", ".join(m for m in models if random_weights[m])
        settings["warning"] = (
            f"RANDOM WEIGHTS: {flagged} ran with random weights (random frozen weights or untrained adapters); these "
            "numbers test the pipeline only"
        )
    out = Path(out_dir)
    if "warning" in settings:  # the terminal says it too (the CLI prints each DataWarning as one line)
        warnings.warn(settings["warning"], DataWarning, stacklevel=2)
    # what `medad report EVAL_DIR` draws heatmaps from (a model with one folder for every dataset)
    record_predictions(out, {k: v for k, v in predictions.items() if isinstance(v, (str, Path))})
    first_metas = {name: _parts(parts)[0][1].meta for name, parts in readers.items()}  # one method per model label
    paper = paper_view(rows, first_metas, settings["dataset_titles"])  # medad/evaluation/paper_view.py
    content: dict[str, Any] = {"settings": settings, "rows": rows, "paper_view": paper}
    if fewshot:  # only then: zero-shot evaluations keep their bytes
        settings["fewshot"] = FEWSHOT_NOTE
        content["fewshot"] = _mark_rows(fewshot_rows(acc, fewshot, list(metrics), ci_cfg), marks)
    write_json_atomic(out / "metrics.json", round_sig(content))
    write_json_atomic(out / "curves.json", round_sig(curves))
    write_json_atomic(out / "comparisons.json", round_sig(comps))
    _write_per_image(out / "per_image.csv", acc, random_weights, volume_table(manifest, volumes))
    _write_per_volume(out / "per_volume.csv", by_volume, random_weights)
    return {"settings": settings, "rows": rows, "comparisons": comps, "out_dir": str(out)}


def _not_zero_shot(readers: Mapping[str, Predictions]) -> dict[str, dict[str, str]]:
    """Model label -> dataset -> its not-zero-shot mark, from each predictions folder's card (the protocol scored a
    target the model's training data include, with ``allow_not_zero_shot``); models without a mark are left out."""
    marks: dict[str, dict[str, str]] = {}
    for name, parts in readers.items():
        for part, reader in _parts(parts):
            found = study_marks(reader.meta)
            found = found if part == "all" else {d: why for d, why in found.items() if d == part}
            if found:
                marks.setdefault(name, {}).update(found)
    return marks


def _mark_rows(rows: list[dict[str, Any]], marks: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """Give each row its ``not_zero_shot`` mark (``None`` when zero-shot); a few-shot row takes its draws' mark."""
    for row in rows:
        labels = row.get("runs") or [row["model"]]
        found = (marks.get(str(label), {}).get(str(row["dataset"])) for label in labels)
        row["not_zero_shot"] = next((mark for mark in found if mark), None)
    return rows


def _mark_comparisons(comps: list[dict[str, Any]], marks: Mapping[str, Mapping[str, str]]) -> None:
    """Give each paired comparison its ``not_zero_shot`` note: which of its models is not zero-shot on the dataset
    (``"adaclip: not zero-shot (trained on CVC-ColonDB)"``), ``None`` when both are."""
    for comp in comps:
        dataset = str(comp["dataset"])
        found = [f"{m}: {marks[m][dataset]}" for m in (comp["model_a"], comp["model_b"]) if dataset in marks.get(m, {})]
        comp["not_zero_shot"] = "; ".join(found) or None


def _readers(folder: str | Path | Mapping[str, str | Path]) -> Predictions:
    """The reader of one model's predictions folder, or per dataset one reader."""
    if isinstance(folder, (str, Path)):
        return PredictionReader(folder)
    return {str(dataset): PredictionReader(path) for dataset, path in folder.items()}


def _parts(predictions: Predictions) -> list[tuple[str, PredictionReader]]:
    """(dataset or ``all``, reader) of one model's predictions."""
    if isinstance(predictions, PredictionReader):
        return [("all", predictions)]
    return sorted(predictions.items())


def _check_predictions(readers: Mapping[str, Predictions], manifest: pd.DataFrame) -> None:
    """Refuse predictions of other images, with skipped images, or lacking some manifest index (a model with
    predictions per dataset: each folder against that dataset's rows).

    Raises:
        DataError: naming the model, its folder and the fix.
    """
    for name, parts in readers.items():
        for part, reader in _parts(parts):
            rows = manifest if part == "all" else manifest[manifest["dataset"].astype(str) == part]
            if part != "all" and rows.empty:
                raise DataError(
                    f"predictions of {name!r} name dataset {part!r}, which the manifest does not hold; evaluate them "
                    "with the manifest they were scored from"
                )
            _check_reader(name if part == "all" else f"{name} ({part})", reader, rows.reset_index(drop=True))


def _check_reader(name: str, reader: PredictionReader, manifest: pd.DataFrame) -> None:
    """One predictions folder against the rows it must cover (see :func:`_check_predictions`)."""
    n = len(manifest)
    if not _same_images(reader.meta, manifest):
        raise DataError(
            f"predictions of {name!r} in {reader.folder} were scored from other images than the dataset given "
            "(manifest hashes differ), so their indices would pair maps with the wrong masks; score the dataset "
            "itself, e.g. `medad score ROOT --kind KIND --out DIR` with the reader options of the evaluation "
            "(--data-option, --kind), then evaluate DIR/predictions"
        )
    missing = np.setdiff1d(np.arange(n), reader.indices)
    skipped = [e for e in reader.skipped if e["index"] < n]
    if skipped:  # unreadable at scoring time: never counted (as normal or otherwise) - refuse, naming them
        shown = ", ".join(f"{e['index']} ({e['case_id']}: {e['reason']})" for e in skipped[:3])
        raise DataError(
            f"predictions of {name!r} in {reader.folder} skipped {len(skipped)} unreadable image(s), which "
            f"would be missing from every metric: {shown}{' ...' if len(skipped) > 3 else ''}; fix or remove "
            "them and rerun `medad score` (what was scored is reused), then evaluate again"
        )
    if missing.size:
        raise DataError(
            f"predictions of {name!r} lack manifest index {int(missing[0])} "
            f"({missing.size} missing); score the whole manifest first"
        )


def _same_images(meta: Mapping[str, Any], manifest: pd.DataFrame) -> bool:
    """Whether predictions were scored from the manifest's images, row by row: its whole hash, or (predictions that
    record it) the hash of the model's inputs only, so masks and labels given after scoring are evaluated."""
    if meta.get("manifest_hash") in (None, manifest_fingerprint(manifest)):
        return True
    return meta.get("inputs_hash") == inputs_fingerprint(manifest)


def _rows_and_curves(
    acc: Accumulated, intervals: Intervals, metrics: list[str], random_weights: Mapping[str, bool]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per model and dataset: every class, then the class mean and the pooled scope, as metrics rows and curves."""
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    unmasked = _datasets_without_masks(acc.manifest)

    def emit(model: str, dataset: str, class_name: str, values: Mapping[str, Any], cis: Mapping[str, Interval],
             classes: list[str]) -> None:  # fmt: skip
        n_images = int(acc.rows_of(model, dataset, classes).size)
        for name in metrics:
            value = values[name]
            if dataset in unmasked and name not in IMAGE_METRICS and isinstance(value, NotApplicable):
                value = NotApplicable(f"{NO_MASKS}, so {value.reason}")
            row = _metric_row(model, dataset, class_name, name, value, cis, n_images, random_weights[model])
            rows.append(row.to_dict())

    for model in acc.models:
        for dataset in (d for d in acc.datasets if acc.covered(model, d)):
            classes = acc.classes(dataset)
            per_class = {}
            for c in classes:
                per_class[c] = acc.point(model, dataset, [c])
                emit(model, dataset, c, per_class[c], intervals.interval(acc, model, dataset, [c], per_class[c], False),
                     [c])  # fmt: skip
                curves.append(_curves(acc, model, dataset, c, [c]))
            mean = {k: mean_over_classes({c: per_class[c][k] for c in classes}) for k in ALL_METRICS}
            emit(model, dataset, MEAN, mean, intervals.interval(acc, model, dataset, classes, mean, True), classes)
            pooled = per_class[classes[0]] if len(classes) == 1 else acc.point(model, dataset, classes)
            emit(model, dataset, POOLED, pooled, intervals.interval(acc, model, dataset, classes, pooled, False),
                 classes)  # fmt: skip
            curves.append(_curves(acc, model, dataset, POOLED, classes))
    return rows, curves


def _titles(manifest: pd.DataFrame, given: Mapping[str, str] | None) -> dict[str, str]:
    """How reports name each dataset of the manifest (``settings.dataset_titles``; reports do not read medad.data)."""
    from medad.data.registry import dataset_title

    names = sorted(set(manifest["dataset"].astype(str)))
    return {name: str((given or {}).get(name) or dataset_title(name)) for name in names}


NO_MASKS = "the dataset has no masks (image labels only)"
"""Why pixel metrics are not applicable on an image-level set (HeadCT, BrainMRI (Kaggle), Br35H, ...)."""


def _datasets_without_masks(manifest: pd.DataFrame) -> set[str]:
    """The datasets of the manifest none of whose rows has a mask file (image labels only)."""
    if "mask_path" not in manifest.columns:
        return set()
    has_mask = manifest["mask_path"].fillna("").astype(str).str.len() > 0
    return {str(d) for d, masked in has_mask.groupby(manifest["dataset"].astype(str)).any().items() if not masked}


def _metric_row(
    model: str,
    dataset: str,
    class_name: str,
    metric: str,
    value: float | NotApplicable,
    cis: Mapping[str, Interval],
    n_images: int,
    random_weights: bool,
) -> MetricRow:
    """One typed metrics row: the value or why it is not applicable, and its interval where there is one."""
    status: Literal["ok", "not_applicable"] = "ok"
    point: float | None = None
    reason: str | None = None
    if isinstance(value, NotApplicable):
        status, reason = "not_applicable", value.reason
    else:
        point = float(value)
    low, high = cis.get(metric, (None, None)) if point is not None else (None, None)
    return MetricRow(
        model=model,
        dataset=dataset,
        class_name=class_name,
        metric=metric,
        value=point,
        ci_low=low,
        ci_high=high,
        n_images=n_images,
        aggregate=AGGREGATES.get(class_name, "class"),
        status=status,
        reason=reason,
        random_weights=bool(random_weights),
    )


def _curves(acc: Accumulated, model: str, dataset: str, class_name: str, classes: list[str]) -> dict[str, Any]:
    """Image ROC/PR and pixel ROC/PR/PRO curves of one scope (<= 512 points each)."""
    rows = acc.rows_of(model, dataset, classes)
    img = acc.image(model, rows)
    pix = acc.pixel(model, dataset, classes)
    return {
        "model": model,
        "dataset": dataset,
        "class_name": class_name,
        "image": img.curves(512) if rows.size else None,
        "pixel": pix.curves(512) if pix.n_pos + pix.n_neg else None,
    }


def _write_per_image(path: Path, acc: Accumulated, random_weights: Mapping[str, bool], volumes: pd.DataFrame) -> None:
    """``per_image.csv``: per model and image its scores, Dice and IoU (``rows.PER_IMAGE_COLUMNS``)."""
    manifest = acc.manifest
    frames = []
    for m in acc.models:
        values = {
            "model": m,
            "dataset": manifest["dataset"].astype(str),
            "index": np.arange(len(manifest)),
            "case_id": manifest["case_id"].astype(str) if "case_id" in manifest else "",
            "class_name": manifest["class_name"].astype(str),
            "label": manifest["label"].astype("Int64"),
            "image_score": acc.image_scores[m].astype(np.float64),
            "max_pixel_score": acc.per_image[m]["max"],
            "dice": acc.per_image[m]["dice"],
            "iou": acc.per_image[m]["iou"],
            "random_weights": bool(random_weights[m]),
            "volume_id": volumes["volume_id"].to_numpy(),
            "slice_order": volumes["slice_order"].array,
        }
        frame = pd.DataFrame({column: values[column] for column in PER_IMAGE_COLUMNS})
        frames.append(frame[[acc.covered(m, d) for d in frame["dataset"]]])
    table = pd.concat(frames, ignore_index=True)
    write_text_atomic(path, table.to_csv(index=False, float_format="%.10g", lineterminator="\n"))


def _write_per_volume(path: Path, results: VolumeResults, random_weights: Mapping[str, bool]) -> None:
    """``per_volume.csv`` (``volumes.PER_VOLUME_COLUMNS``), only when the manifest holds volumes."""
    if results.empty:
        path.unlink(missing_ok=True)  # a re-evaluation of plain images leaves no stale table behind
        return
    table = per_volume_table(results, random_weights)
    write_text_atomic(path, table.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
