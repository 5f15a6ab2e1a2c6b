"""Turn a threshold spec (``fixed:0.5``, ``percentile:99:DIR``, ``f1[:DIR]``, ``youden[:DIR]``) into a
:class:`~medad.export.thresholds.Threshold`, reading predictions folders and their manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medad.engine.predictions import PredictionReader
from medad.errors import ExportError
from medad.export.manifest import find_run_manifest, load_manifest_file, manifest_for_run, predictions_folder
from medad.export.thresholds import Threshold, fixed_threshold, optimal_threshold, percentile_threshold

SPEC_HELP = "use fixed:VALUE, percentile:P:NORMALS_PRED_DIR, f1[:VAL_PRED_DIR] or youden[:VAL_PRED_DIR]"


def _read_mask(row: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """Return a row's ground-truth mask at the map's size: all-False for normals, None if unusable."""
    label, path = row.get("label"), str(row.get("mask_path") or "")
    if not path:
        return np.zeros(shape, bool) if label is not None and not pd.isna(label) and int(label) == 0 else None
    if Path(path).suffix.lower() not in (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".gif"):
        return None
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L"))
    mask = arr > (127 if str(row.get("mask_rule", ">0")) == ">127" else 0)
    return mask if mask.shape == shape else None


def percentile_from_predictions(normals_dir: str | Path, percentile: float) -> Threshold:
    """Percentile threshold from the maps of a predictions folder of normal images.

    When the folder carries a manifest, only rows labelled normal (0) are used.
    """
    reader = PredictionReader(predictions_folder(normals_dir))
    indices = reader.indices
    found = find_run_manifest(normals_dir)
    if found is not None:
        labels = load_manifest_file(found)["label"]
        indices = (
            np.array(
                [i for i in indices if i < len(labels) and labels.iloc[i] is not pd.NA and labels.iloc[i] == 0],
                dtype=np.int64,
            )
            if labels.notna().any()
            else indices
        )
    threshold = percentile_threshold((m for _, m in reader.iter_maps(indices.tolist())), percentile)
    return Threshold(threshold.rule, threshold.value, {**threshold.details, "normals": Path(normals_dir).name})


def optimal_from_predictions(val_dir: str | Path, manifest: pd.DataFrame, criterion: str) -> Threshold:
    """F1- / Youden-optimal threshold on labelled validation predictions.

    Pixel level (maps + masks) when every labelled row has a usable mask (normals count as empty masks),
    else image level (image scores + labels).
    """
    reader = PredictionReader(predictions_folder(val_dir))
    rows = [(i, manifest.iloc[i].to_dict()) for i in reader.indices.tolist() if i < len(manifest)]
    labelled = [(i, r) for i, r in rows if r.get("label") is not None and not pd.isna(r.get("label"))]
    if not labelled:
        raise ExportError(
            f"{criterion} needs labelled validation images but the manifest of {val_dir} has no "
            "labels; use fixed:VALUE or percentile:P:NORMALS_PRED_DIR"
        )
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for i, m in reader.iter_maps([i for i, _ in labelled]):
        mask = _read_mask(dict(manifest.iloc[i]), m.shape)
        if mask is None:
            maps, masks = [], []
            break
        maps.append(m)
        masks.append(mask)
    if maps and any(g.any() for g in masks):
        threshold = optimal_threshold(maps, masks, criterion)
    else:
        positions = np.searchsorted(reader.indices, [i for i, _ in labelled])
        labels = np.array([int(r["label"]) for _, r in labelled])
        threshold = optimal_threshold(reader.image_scores[positions].astype(np.float64), labels, criterion)
    return Threshold(threshold.rule, threshold.value, {**threshold.details, "validation": Path(val_dir).name})


def resolve_threshold(spec: str, *, run_dir: str | Path, manifest: pd.DataFrame) -> Threshold:
    """Parse a threshold spec.

    Args:
        spec: ``fixed:0.5``; ``percentile:99:NORMALS_PRED_DIR``; ``f1`` / ``youden`` (optimal on the run's own
            labelled rows, recorded as in-sample) or ``f1:VAL_PRED_DIR`` / ``youden:VAL_PRED_DIR`` (a
            validation predictions folder with its manifest saved inside).
        run_dir: the predictions folder being exported (or the ``medad score`` output folder holding it); the
            reference folders may be either too.
        manifest: its manifest.

    Raises:
        ExportError: for a malformed spec or unusable reference predictions.
    """
    rule, _, rest = spec.strip().partition(":")
    rule = rule.lower()
    try:
        if rule == "fixed":
            return fixed_threshold(float(rest))
        if rule == "percentile":
            value, _, folder = rest.partition(":")
            if not folder:
                raise ExportError(f"threshold {spec!r} names no normals folder; {SPEC_HELP}")
            return percentile_from_predictions(folder, float(value))
    except ValueError:
        raise ExportError(f"threshold {spec!r} is not a number where one is expected; {SPEC_HELP}") from None
    if rule in ("f1", "youden"):
        if rest:
            return optimal_from_predictions(rest, manifest_for_run(rest), rule)
        threshold = optimal_from_predictions(run_dir, manifest, rule)
        return Threshold(threshold.rule, threshold.value, {**threshold.details, "in_sample": True})
    raise ExportError(f"unknown threshold {spec!r}; {SPEC_HELP}")
