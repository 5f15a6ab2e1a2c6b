"""Evaluate stored predictions against a manifest and write the evaluation folder (see docs/architecture.md).

One pass over the images, class by class in chunks: masks are read once at native resolution and labelled once;
each model's maps are read chunk by chunk from its predictions store and fed to the exact streaming
accumulators and to the per-image histograms used by the bootstrap. Output files:

* ``metrics.json`` - per model, dataset and class (plus ``__mean__``, the class mean, and ``__pooled__``, all images
  pooled; each row names its ``aggregate``) each metric with its bootstrap CI, or ``not_applicable`` with the
  reason; ``settings.random_weights`` maps every model to whether its frozen weights were random (read from its
  predictions' ``meta.json``), and every row repeats its model's flag;
* ``per_image.csv`` - per image and model: image score, max pixel score, Dice and IoU at the threshold, and the
  model's ``random_weights`` flag;
* ``curves.json`` - image-level ROC/PR and pixel-level ROC/PR/PRO curves (<= 512 points each);
* ``comparisons.json`` - paired comparisons of every model pair, with multiple-comparison-adjusted p-values.

Images with an unknown label (``<NA>``) appear in ``per_image.csv`` only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medad.engine.evaluation_resolution import model_resolution, resize_map, resize_mask, resolution_settings
from medad.engine.paper_view import paper_view
from medad.engine.predictions import predictions_random_weights
from medad.errors import ConfigError, DataError
from medad.metrics import (
    IMPLEMENTATION_VERSION,
    MEAN,
    POOLED,
    ImageMetrics,
    NotApplicable,
    PixelMetrics,
    component_sizes,
    dice_iou,
    mean_ignoring_na,
    mean_over_classes,
)
from medad.stats import (
    PixelHistograms,
    adjust_pvalues,
    bootstrap_ci,
    delong_test,
    image_statistic,
    mean_statistic,
    paired_bootstrap_test,
    wilcoxon_test,
)
from medad.stats.defaults import CI_LEVEL, CI_METHOD, CI_RESAMPLES, CI_SEED, check_ci_settings
from medad.utils.io import write_json_atomic, write_text_atomic

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")
SEG_METRICS = ("dice", "iou")
ALL_METRICS = IMAGE_METRICS + PIXEL_METRICS + SEG_METRICS
COMPARED = {
    "image_auroc": "delong",
    "pixel_auroc": "paired_bootstrap",
    "pixel_ap": "paired_bootstrap",
    "aupro": "paired_bootstrap",
    "dice": "wilcoxon",
    "iou": "wilcoxon",
}
DEFAULT_CI = {"n_resamples": CI_RESAMPLES, "seed": CI_SEED, "method": CI_METHOD, "level": CI_LEVEL}
#: ``aggregate`` of a metrics row by its ``class_name``: one class, the class mean (macro) or all images (micro).
AGGREGATES = {MEAN: "class_mean", POOLED: "pooled"}
AGGREGATE_NOTES = {
    "class": "one class",
    "class_mean": f"{MEAN}: unweighted mean of the per-class values (macro average; what papers report per dataset)",
    "pooled": f"{POOLED}: every image and pixel of the dataset in one set (micro average)",
}


def round_sig(x: Any, digits: int = 10) -> Any:
    """Round floats (recursively in lists/dicts) to ``digits`` significant digits; NaN/inf become None."""
    if isinstance(x, dict):
        return {k: round_sig(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [round_sig(v, digits) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.{digits}g}") if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


class _Scope:
    """What one model accumulates for one (dataset, class)."""

    def __init__(self, fpr_limit: float, connectivity: int, memory_limit: int) -> None:
        self.pixel = PixelMetrics(fpr_limit, connectivity, memory_limit_bytes=memory_limit)
        self.rows: list[int] = []


def _value(v: float | NotApplicable) -> tuple[float | None, str, str | None]:
    if isinstance(v, NotApplicable):
        return None, "not_applicable", v.reason
    return float(v), "ok", None


def evaluate(
    predictions: Mapping[str, str | Path],
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
) -> dict[str, Any]:
    """Compute metrics, CIs, curves and comparisons for several models' predictions on one manifest.

    Args:
        predictions: model name -> predictions folder (``medad.engine.predictions`` layout); every manifest row
            must have a prediction in every folder.
        manifest: the manifest (``medad.data`` contract); its row position is the prediction index.
        out_dir: evaluation folder to write.
        metrics: subset of :data:`ALL_METRICS`.
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
            model's input size, as the released code evaluates; :mod:`medad.engine.evaluation_resolution`).

    Returns:
        ``{"settings", "rows", "comparisons", "out_dir"}`` - the content of metrics.json and comparisons.json.
    """
    from medad.engine.features import manifest_fingerprint
    from medad.engine.predictions import PredictionReader

    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
    if not predictions:
        raise ConfigError("no predictions to evaluate")
    ci_cfg = {**DEFAULT_CI, **(ci or {})}
    names = ("ci['n_resamples']", "ci['level']", "ci['method']")
    check_ci_settings(ci_cfg["n_resamples"], ci_cfg["level"], ci_cfg["method"], names=names)
    models = list(predictions)
    if mask_reader is None:
        from medad.data import read_mask as mask_reader
    readers = {name: PredictionReader(folder) for name, folder in predictions.items()}
    random_weights = {name: predictions_random_weights(reader.meta) for name, reader in readers.items()}
    size = model_resolution(resolution, {name: reader.meta for name, reader in readers.items()})
    manifest = manifest.reset_index(drop=True)
    n = len(manifest)
    expected = manifest_fingerprint(manifest)
    for name, reader in readers.items():
        scored = reader.meta.get("manifest_hash")
        if scored is not None and scored != expected:
            raise DataError(
                f"predictions of {name!r} in {reader.folder} were scored from other images than the dataset given "
                "(manifest hashes differ), so their indices would pair maps with the wrong masks; score the dataset "
                "itself, e.g. `medad score ROOT --kind KIND --out DIR`, then evaluate DIR/predictions"
            )
    for name, reader in readers.items():
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
    label = manifest["label"].astype("Int64")
    labelled = label.notna().to_numpy()
    labels = label.fillna(-1).to_numpy(dtype=np.int64)
    groups = manifest["group_id"].astype(str).to_numpy() if "group_id" in manifest else np.arange(n).astype(str)
    scopes_keys = sorted({(str(d), str(c)) for d, c in zip(manifest["dataset"], manifest["class_name"], strict=True)})
    limit = max(memory_limit_bytes // max(len(models) * len(scopes_keys), 1), 1 << 26)
    scopes = {(m, key): _Scope(fpr_limit, connectivity, limit) for m in models for key in scopes_keys}
    hists = {(m, d): (PixelHistograms(), []) for m in models for d in {k[0] for k in scopes_keys}}
    image_scores = {m: readers[m].image_scores[np.searchsorted(readers[m].indices, np.arange(n))] for m in models}
    per_image = {m: {"max": np.full(n, np.nan), "dice": np.full(n, np.nan), "iou": np.full(n, np.nan)} for m in models}

    for key in scopes_keys:
        idx = np.flatnonzero(
            (manifest["dataset"].astype(str) == key[0]).to_numpy()
            & (manifest["class_name"].astype(str) == key[1]).to_numpy()
        )
        for start in range(0, idx.size, chunk_size):
            chunk = idx[start : start + chunk_size]
            masks = {int(i): mask_reader(manifest.iloc[int(i)].to_dict()) for i in chunk if labelled[i]}
            masks = {i: resize_mask(mk, size) for i, mk in masks.items()}
            comps = {i: component_sizes(mk, connectivity) for i, mk in masks.items()}
            for m in models:
                scope = scopes[(m, key)]
                maps, sizes, ncomp = [], [], []
                for i, pixel_map in readers[m].iter_maps(chunk):
                    pixel_map = resize_map(pixel_map, size)
                    per_image[m]["max"][i] = float(pixel_map.max()) if pixel_map.size else np.nan
                    if i not in masks:
                        continue
                    if pixel_map.shape != masks[i].shape:
                        raise DataError(
                            f"{m}: map of {manifest.at[i, 'case_id'] if 'case_id' in manifest else i} is "
                            f"{pixel_map.shape} but its mask is {masks[i].shape}; predictions must be at native size"
                        )
                    seg = dice_iou(pixel_map, masks[i], threshold)
                    per_image[m]["dice"][i], per_image[m]["iou"][i] = seg["dice"][0], seg["iou"][0]
                    maps.append(pixel_map)
                    sizes.append(comps[i][0][0])
                    ncomp.append(int(comps[i][1][0]))
                    scope.rows.append(i)
                if maps:
                    scope.pixel.update(maps, None, sizes, ncomp)
                    hist, positions = hists[(m, key[0])]
                    hist.update(maps, sizes, ncomp)
                    positions.extend(scope.rows[-len(maps) :])

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
        "random_weights": random_weights,
        "aggregates": AGGREGATE_NOTES,
        "dice_iou_aggregate": "mean over abnormal images (label 1); per image N/A when mask and prediction are empty",
    }
    hist_positions = {k: (h, np.asarray(pos, dtype=np.int64)) for k, (h, pos) in hists.items()}
    ev = _Evaluation(
        manifest,
        labels,
        groups,
        models,
        scopes,
        scopes_keys,
        image_scores,
        per_image,
        metrics,
        ci_cfg,
        fpr_limit,
        hist_positions,
    )
    rows, curves = ev.rows_and_curves()
    pairs = _pairs(models, comparisons)
    comps = ev.comparisons(pairs, correction)
    settings["ci"].update(ev.used_settings())
    for row in rows:
        row["random_weights"] = random_weights[row["model"]]
    if any(random_weights.values()):
        flagged = ", ".join(m for m in models if random_weights[m])
        settings["warning"] = (
            f"RANDOM WEIGHTS: {flagged} ran with random frozen weights; these numbers test the pipeline only"
        )
    out = Path(out_dir)
    paper = paper_view(rows)  # the paper's table (medad/engine/paper_view.py)
    write_json_atomic(out / "metrics.json", round_sig({"settings": settings, "rows": rows, "paper_view": paper}))
    write_json_atomic(out / "curves.json", round_sig(curves))
    write_json_atomic(out / "comparisons.json", round_sig(comps))
    _write_per_image(out / "per_image.csv", manifest, models, image_scores, per_image, random_weights)
    return {"settings": settings, "rows": rows, "comparisons": comps, "out_dir": str(out)}


def _pairs(models: list[str], comparisons: str | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if comparisons is None:
        return []
    if comparisons == "all":
        return list(itertools.combinations(models, 2))
    pairs = [(str(a), str(b)) for a, b in comparisons]
    bad = sorted({x for p in pairs for x in p} - set(models))
    if bad:
        raise ConfigError(f"comparison names unknown model(s) {bad}; models are {models}")
    return pairs


def _write_per_image(
    path: Path,
    manifest: pd.DataFrame,
    models: list[str],
    image_scores: dict[str, np.ndarray],
    per_image: dict[str, dict[str, np.ndarray]],
    random_weights: Mapping[str, bool],
) -> None:
    frames = []
    for m in models:
        frames.append(
            pd.DataFrame(
                {
                    "model": m,
                    "dataset": manifest["dataset"].astype(str),
                    "index": np.arange(len(manifest)),
                    "case_id": manifest["case_id"].astype(str) if "case_id" in manifest else "",
                    "class_name": manifest["class_name"].astype(str),
                    "label": manifest["label"].astype("Int64"),
                    "image_score": image_scores[m].astype(np.float64),
                    "max_pixel_score": per_image[m]["max"],
                    "dice": per_image[m]["dice"],
                    "iou": per_image[m]["iou"],
                    "random_weights": bool(random_weights[m]),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    write_text_atomic(path, table.to_csv(index=False, float_format="%.10g", lineterminator="\n"))


class _Evaluation:
    """Rows, curves and comparisons from the accumulated state (internal to :func:`evaluate`)."""

    def __init__(
        self, manifest, labels, groups, models, scopes, keys, image_scores, per_image, metrics, ci, fpr_limit, hists
    ) -> None:
        self.hists = hists
        self.manifest, self.labels, self.groups = manifest, labels, groups
        self.models, self.scopes, self.keys = models, scopes, keys
        self.image_scores, self.per_image = image_scores, per_image
        self.metrics, self.ci, self.fpr_limit = list(metrics), ci, fpr_limit
        self.datasets = sorted({d for d, _ in keys})
        self.units: set[str] = set()
        self.strata: set[str] = set()
        self.methods_used: dict[str, int] = {}

    def used_settings(self) -> dict[str, Any]:
        """What the bootstrap actually did: resampling unit(s), stratification and interval method(s)."""
        if not self.units:
            return {"resampling_unit": "none (no bootstrap was run)", "stratification": "none"}
        units = sorted(self.units)
        names = {"image": "image", "group_id": "group_id clusters"}
        out: dict[str, Any] = {
            "resampling_unit": " and ".join(names[u] for u in units)
            + (" (group_id where some cluster holds more than one image)" if len(units) > 1 else ""),
            "stratification": "; ".join(sorted(self.strata)),
        }
        if self.methods_used:
            out["method_used"] = ", ".join(f"{m} ({n} intervals)" for m, n in sorted(self.methods_used.items()))
        return out

    def _classes(self, dataset: str) -> list[str]:
        return [c for d, c in self.keys if d == dataset]

    def _rows_of(self, model: str, dataset: str, classes: list[str]) -> np.ndarray:
        return np.sort(np.concatenate([np.asarray(self.scopes[(model, (dataset, c))].rows, np.int64) for c in classes]))

    def _point(self, model: str, dataset: str, classes: list[str]) -> dict[str, float | NotApplicable]:
        rows = self._rows_of(model, dataset, classes)
        img = ImageMetrics()
        img.update(self.image_scores[model][rows], self.labels[rows])
        out = dict(img.compute())
        parts = [self.scopes[(model, (dataset, c))].pixel for c in classes]
        pix = parts[0] if len(parts) == 1 else PixelMetrics.merged(parts)
        out.update({k: v for k, v in pix.compute().items() if k in PIXEL_METRICS})
        abnormal = rows[self.labels[rows] == 1]
        for name in SEG_METRICS:
            out[name] = (
                mean_ignoring_na(self.per_image[model][name][abnormal])
                if abnormal.size
                else NotApplicable("no abnormal images")
            )
        return out

    def _groups_for(self, rows: np.ndarray) -> np.ndarray | None:
        g = self.groups[rows]
        return g if np.unique(g).size < g.size else None

    def _stat(self, model: str, dataset: str, rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Statistic over ``rows`` (labelled images of one scope) with outputs in ALL_METRICS order."""
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

    def _ci(
        self, model: str, dataset: str, classes: list[str], exact: dict[str, float | NotApplicable], mean: bool
    ) -> dict[str, tuple[float | None, float | None]]:
        if int(self.ci["n_resamples"]) <= 0:
            return {}
        rows_all = self._rows_of(model, dataset, classes)
        if rows_all.size == 0:
            return {}
        cls = self.manifest["class_name"].astype(str).to_numpy()[rows_all]
        if mean:
            stats = [(np.flatnonzero(cls == c), self._stat(model, dataset, rows_all[cls == c])) for c in classes]

            def statistic(w: np.ndarray) -> np.ndarray:
                return np.mean([f(w[:, cols]) for cols, f in stats], axis=0)

            strata = cls
        else:
            statistic = self._stat(model, dataset, rows_all)
            strata = None
        groups = self._groups_for(rows_all)
        if groups is None:
            lab = self.labels[rows_all].astype(str)
            strata = lab if strata is None else np.char.add(np.char.add(strata.astype(str), "|"), lab)
        self.units.add("image" if groups is None else "group_id")
        by = ["class_name"] if mean else []
        by += ["label"] if groups is None else []
        scope = f"{MEAN} intervals" if mean else "per-class and pooled intervals"
        self.strata.add(f"{scope}: by {' and '.join(by)}" if by else f"{scope}: none")
        est = np.array([float(exact[k]) if not isinstance(exact[k], NotApplicable) else np.nan for k in ALL_METRICS])
        res = bootstrap_ci(
            statistic,
            rows_all.size,
            n_resamples=int(self.ci["n_resamples"]),
            seed=int(self.ci["seed"]),
            groups=groups,
            strata=strata,
            method=self.ci["method"],
            level=float(self.ci["level"]),
            estimate=est,
            bounds=(0.0, 1.0),  # every metric here is a fraction
        )
        for k, r in zip(ALL_METRICS, res, strict=True):
            if k in self.metrics and np.isfinite(r.ci_low):
                self.methods_used[r.method_used] = self.methods_used.get(r.method_used, 0) + 1
        return {k: (r.ci_low, r.ci_high) for k, r in zip(ALL_METRICS, res, strict=True)}

    def rows_and_curves(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows, curves = [], []
        for model in self.models:
            for dataset in self.datasets:
                classes = self._classes(dataset)
                per_class = {}
                for c in classes:
                    per_class[c] = self._point(model, dataset, [c])
                    self._emit(
                        rows, model, dataset, c, per_class[c], self._ci(model, dataset, [c], per_class[c], False), [c]
                    )
                    curves.append(self._curves(model, dataset, c, [c]))
                mean = {k: mean_over_classes({c: per_class[c][k] for c in classes}) for k in ALL_METRICS}
                self._emit(rows, model, dataset, MEAN, mean, self._ci(model, dataset, classes, mean, True), classes)
                pooled = per_class[classes[0]] if len(classes) == 1 else self._point(model, dataset, classes)
                self._emit(
                    rows, model, dataset, POOLED, pooled, self._ci(model, dataset, classes, pooled, False), classes
                )
                curves.append(self._curves(model, dataset, POOLED, classes))
        return rows, curves

    def _emit(self, rows, model, dataset, class_name, values, cis, classes) -> None:
        n_images = int(self._rows_of(model, dataset, classes).size)
        for name in self.metrics:
            value, status, reason = _value(values[name])
            low, high = cis.get(name, (None, None)) if value is not None else (None, None)
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "class_name": class_name,
                    "metric": name,
                    "value": value,
                    "ci_low": low,
                    "ci_high": high,
                    "n_images": n_images,
                    "aggregate": AGGREGATES.get(class_name, "class"),
                    "status": status,
                    "reason": reason,
                }
            )

    def _curves(self, model: str, dataset: str, class_name: str, classes: list[str]) -> dict[str, Any]:
        rows = self._rows_of(model, dataset, classes)
        img = ImageMetrics()
        img.update(self.image_scores[model][rows], self.labels[rows])
        parts = [self.scopes[(model, (dataset, c))].pixel for c in classes]
        pix = parts[0] if len(parts) == 1 else PixelMetrics.merged(parts)
        return {
            "model": model,
            "dataset": dataset,
            "class_name": class_name,
            "image": img.curves(512) if rows.size else None,
            "pixel": pix.curves(512) if pix.n_pos + pix.n_neg else None,
        }

    def comparisons(self, pairs: list[tuple[str, str]], correction: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        wanted = [k for k in COMPARED if k in self.metrics]
        n_res, seed = max(int(self.ci["n_resamples"]), 0), int(self.ci["seed"])
        for a, b in pairs:
            for dataset in self.datasets:
                classes = self._classes(dataset)
                scopes = [(c, [c]) for c in classes] + ([(POOLED, classes)] if len(classes) > 1 else [])
                for class_name, cls in scopes:
                    rows = self._rows_of(a, dataset, cls)
                    y = self.labels[rows] == 1
                    base = {"dataset": dataset, "class_name": class_name, "model_a": a, "model_b": b}
                    for metric in wanted:
                        res = self._compare(metric, a, b, dataset, rows, y, n_res, seed)
                        if res is not None:
                            out.append({**base, "metric": metric, **res, "correction": correction})
        adjusted = adjust_pvalues([r["p_value"] if r["p_value"] is not None else np.nan for r in out], correction)
        for r, p in zip(out, adjusted, strict=True):
            r["p_adjusted"] = float(p) if np.isfinite(p) else None
        return out

    def _compare(self, metric, a, b, dataset, rows, y, n_res, seed) -> dict[str, Any] | None:
        if COMPARED[metric] == "delong":
            if y.all() or not y.any():
                return None
            r = delong_test(y, self.image_scores[a][rows], self.image_scores[b][rows])
            return {
                "test": "delong",
                "estimate": r["estimate"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "p_value": r["p_value"],
                "effect_size": r["estimate"],
                "n": r["n"],
                "n_resamples": None,
            }
        if COMPARED[metric] == "wilcoxon":
            va, vb = self.per_image[a][metric][rows[y]], self.per_image[b][metric][rows[y]]
            ok = np.isfinite(va) & np.isfinite(vb)
            if not ok.any():
                return None
            r = wilcoxon_test(va[ok], vb[ok])
            low = high = None
            if n_res > 0:
                boot = paired_bootstrap_test(
                    mean_statistic(va[ok]), mean_statistic(vb[ok]), int(ok.sum()), n_resamples=n_res, seed=seed
                )[0]
                low, high = boot["ci_low"], boot["ci_high"]
            return {
                "test": "wilcoxon",
                "estimate": r["estimate"],
                "ci_low": low,
                "ci_high": high,
                "p_value": r["p_value"],
                "effect_size": r["effect_size"],
                "n": r["n"],
                "n_resamples": None,
                "ci_n_resamples": n_res if n_res > 0 else None,
            }
        cls = sorted(set(self.manifest["class_name"].astype(str).to_numpy()[rows]))
        pa, pb = self._point(a, dataset, cls)[metric], self._point(b, dataset, cls)[metric]
        if isinstance(pa, NotApplicable) or isinstance(pb, NotApplicable) or n_res <= 0:
            return None
        k = ALL_METRICS.index(metric)
        sa, sb = self._stat(a, dataset, rows), self._stat(b, dataset, rows)
        est = np.full(len(ALL_METRICS), np.nan)
        est[k] = float(pa) - float(pb)
        groups = self._groups_for(rows)
        self.units.add("image" if groups is None else "group_id")
        r = paired_bootstrap_test(sa, sb, rows.size, estimate=est, n_resamples=n_res, seed=seed, groups=groups)[k]
        return {
            "test": "paired_bootstrap",
            "estimate": r["estimate"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "p_value": r["p_value"],
            "effect_size": r["estimate"],
            "n": int(rows.size),
            "n_resamples": n_res,
            "n_valid": r["n_valid"],
        }
