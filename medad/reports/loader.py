"""Read an evaluation folder (the contract in ``docs/architecture.md``, "Evaluation output") into memory.

Curves in ``curves.json`` are accepted in the shapes an evaluation may reasonably write them: a list of
entries carrying ``model``/``dataset``/``class_name`` (optionally wrapped as ``{"curves": [...]}``), or a
nested mapping ``model -> dataset -> class_name -> curves``. Curves may be grouped by level (``{"image":
{"roc", "pr"}, "pixel": {"roc", "pr", "pro"}}``, as ``medad.evaluation.evaluate`` writes them) or not. Each curve
is either a mapping of coordinate arrays (``fpr``/``tpr``, ``recall``/``precision``, ``fpr``/``pro``) or a
list of ``[x, y]`` pairs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medad.errors import DataError
from medad.evaluation.rows import COMPARISON_KEYS, METRIC_ROW_KEYS, PER_IMAGE_KEYS
from medad.evaluation.volumes import PER_VOLUME_COLUMNS

RESULT_COLUMNS = list(METRIC_ROW_KEYS)
PER_IMAGE_COLUMNS = list(PER_IMAGE_KEYS)
COMPARISON_COLUMNS = list(COMPARISON_KEYS)

#: Curve kind -> (x key, y key) and the alternative key names accepted for each axis.
CURVE_AXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "roc": (("fpr", "x"), ("tpr", "y")),
    "pr": (("recall", "x"), ("precision", "y")),
    "pro": (("fpr", "x"), ("pro", "y")),
}
CURVE_LEVELS = ("image", "pixel")
_CURVE_ALIASES = {"roc": "roc", "pr": "pr", "prc": "pr", "precision_recall": "pr", "pro": "pro"}


@dataclass
class Curve:
    """One downsampled curve: ``x``/``y`` coordinates and the area the evaluation recorded for it (if any)."""

    x: np.ndarray
    y: np.ndarray
    area: float | None = None


@dataclass
class EvaluationResults:
    """Everything a report needs from one evaluation folder.

    Attributes:
        folder: the evaluation folder.
        settings: ``metrics.json`` settings (CI method, resamples, unit, seed, ...).
        results: one row per model/dataset/class/metric (``RESULT_COLUMNS``).
        per_image: one row per image per model (``PER_IMAGE_COLUMNS``); empty if ``per_image.csv`` is absent.
        curves: ``(model, dataset, class_name) -> {key: Curve}``, key ``<level>/<kind>`` with level ``image`` or
            ``pixel`` (or just ``<kind>`` when the file has no levels) and kind ``roc``/``pr``/``pro``.
        comparisons: one row per paired comparison (``COMPARISON_COLUMNS``); empty if none.
        per_volume: one row per volume per model (``per_volume.csv``); empty when the evaluation had no volumes.
    """

    folder: Path
    settings: dict[str, Any]
    results: pd.DataFrame
    per_image: pd.DataFrame
    curves: dict[tuple[str, str, str], dict[str, Curve]] = field(default_factory=dict)
    comparisons: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COMPARISON_COLUMNS))
    per_volume: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PER_VOLUME_COLUMNS)))


def resolve_evaluation_dir(path: str | Path) -> Path:
    """Return the evaluation folder for ``path``: its ``evaluation/`` sub-folder when there is one (a protocol
    run folder, whose top-level ``metrics.json`` is only a copy), else the folder itself.

    Raises:
        DataError: neither ``path`` nor ``path/evaluation`` holds a ``metrics.json``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass an evaluation folder or a protocol run folder")
    for candidate in (path / "evaluation", path):
        if (candidate / "metrics.json").is_file():
            return candidate
    raise DataError(
        f"{path} is neither an evaluation folder (no metrics.json in it) nor a run folder with one under "
        f"evaluation/; run `medad eval` (or `medad run`) first, or pass the folder that holds metrics.json"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-run the evaluation") from exc


def _frame(records: list[dict[str, Any]], columns: list[str], source: Path) -> pd.DataFrame:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{source} must hold a list of objects; re-run the evaluation")
    frame = pd.DataFrame.from_records(records)
    for column in columns:
        if column not in frame.columns:
            frame[column] = None
    return frame[columns + [c for c in frame.columns if c not in columns]]


def _load_results(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    path = folder / "metrics.json"
    data = _read_json(path)
    if not isinstance(data, dict) or "rows" not in data:
        raise DataError(f"{path} has no 'rows' list; it is not a medad metrics.json - re-run the evaluation")
    settings = data.get("settings") or {}
    results = _frame(data["rows"], RESULT_COLUMNS, path)
    missing = results[["model", "dataset", "class_name", "metric"]].isna().any(axis=1)
    if missing.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(missing)[0])} lacks model/dataset/class_name/metric")
    results["status"] = results["status"].fillna("ok")
    for column in ("value", "ci_low", "ci_high"):
        results[column] = pd.to_numeric(results[column], errors="coerce").astype("float64")
    return settings, results


def _load_per_image(folder: Path) -> pd.DataFrame:
    path = folder / "per_image.csv"
    if not path.is_file():
        return pd.DataFrame(columns=PER_IMAGE_COLUMNS)
    frame = pd.read_csv(path, dtype={"model": str, "dataset": str, "case_id": str, "class_name": str})
    absent = [c for c in ("model", "dataset", "index", "case_id", "label", "image_score") if c not in frame.columns]
    if absent:
        raise DataError(f"{path} lacks column(s) {absent}; re-run the evaluation")
    for column in PER_IMAGE_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    frame["index"] = frame["index"].astype("int64")
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce").astype("Int64")
    for column in ("image_score", "max_pixel_score", "dice", "iou"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _load_per_volume(folder: Path) -> pd.DataFrame:
    """``per_volume.csv`` (written only when the evaluated inputs held volumes), else an empty table."""
    path = folder / "per_volume.csv"
    if not path.is_file():
        return pd.DataFrame(columns=list(PER_VOLUME_COLUMNS))
    frame = pd.read_csv(path, dtype={"model": str, "dataset": str, "volume_id": str})
    absent = [c for c in PER_VOLUME_COLUMNS if c not in frame.columns]
    if absent:
        raise DataError(f"{path} lacks column(s) {absent}; re-run the evaluation")
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce").astype("Int64")
    for column in ("volume_score", "dice", "iou"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _parse_curve(raw: Any, kind: str) -> Curve | None:
    x_keys, y_keys = CURVE_AXES[kind]
    area = None
    if isinstance(raw, dict):
        x = next((raw[k] for k in x_keys if k in raw), None)
        y = next((raw[k] for k in y_keys if k in raw), None)
        for key in ("area", "auc", "value", "aupro", "ap"):
            if isinstance(raw.get(key), (int, float)) and math.isfinite(raw[key]):
                area = float(raw[key])
                break
    elif isinstance(raw, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in raw):
        x, y = [p[0] for p in raw], [p[1] for p in raw]
    else:
        return None
    if x is None or y is None or len(x) != len(y) or len(x) == 0:
        return None
    x_arr = np.asarray([np.nan if v is None else v for v in x], dtype=np.float64)
    y_arr = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
    return Curve(x_arr, y_arr, area)


def _curve_set(entry: dict[str, Any]) -> dict[str, Curve]:
    """Curves of one entry keyed ``"<level>/<kind>"`` (level ``image``/``pixel``) or ``"<kind>"`` if unlevelled."""
    source = entry.get("curves", entry) if isinstance(entry.get("curves"), dict) else entry
    out: dict[str, Curve] = {}
    for key, raw in source.items():
        if key in CURVE_LEVELS and isinstance(raw, dict):
            out.update({f"{key}/{kind}": curve for kind, curve in _curve_set(raw).items() if "/" not in kind})
            continue
        kind = _CURVE_ALIASES.get(str(key).lower())
        if kind is not None and (curve := _parse_curve(raw, kind)) is not None:
            out[kind] = curve
    return out


def _load_curves(folder: Path) -> dict[tuple[str, str, str], dict[str, Curve]]:
    path = folder / "curves.json"
    if not path.is_file():
        return {}
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("curves"), list):
        data = data["curves"]
    curves: dict[tuple[str, str, str], dict[str, Curve]] = {}
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and {"model", "dataset", "class_name"} <= entry.keys():
                key = (str(entry["model"]), str(entry["dataset"]), str(entry["class_name"]))
                if found := _curve_set(entry):
                    curves[key] = found
    elif isinstance(data, dict):
        for model, datasets in data.items():
            for dataset, classes in (datasets or {}).items() if isinstance(datasets, dict) else ():
                for class_name, entry in (classes or {}).items() if isinstance(classes, dict) else ():
                    if isinstance(entry, dict) and (found := _curve_set(entry)):
                        curves[(str(model), str(dataset), str(class_name))] = found
    return curves


def _load_comparisons(folder: Path) -> pd.DataFrame:
    path = folder / "comparisons.json"
    if not path.is_file():
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    data = _read_json(path)
    if isinstance(data, dict) and "comparisons" in data:
        data = data["comparisons"]
    frame = _frame(data, COMPARISON_COLUMNS, path)
    for column in ("estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "effect_size"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def load_evaluation(path: str | Path) -> EvaluationResults:
    """Load an evaluation folder (or a run folder with one under ``evaluation/``).

    Args:
        path: the evaluation folder, or a protocol run folder containing ``evaluation/``.

    Returns:
        The parsed results; ``per_image``, ``curves`` and ``comparisons`` are empty when their file is absent.

    Raises:
        DataError: no ``metrics.json`` could be found, or a result file is malformed.
    """
    folder = resolve_evaluation_dir(path)
    settings, results = _load_results(folder)
    return EvaluationResults(
        folder=folder,
        settings=settings if isinstance(settings, dict) else {},
        results=results,
        per_image=_load_per_image(folder),
        curves=_load_curves(folder),
        comparisons=_load_comparisons(folder),
        per_volume=_load_per_volume(folder),
    )
