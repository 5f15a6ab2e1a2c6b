"""Report tables: results as ``value [95% CI]``, paired comparisons, settings and selected cases.

Every table is a plain :class:`pandas.DataFrame` of display strings next to the raw numbers, so the same
object feeds the CSV/JSON files, the Markdown and the HTML report.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from medad.evaluation.rows import VOLUMES
from medad.reports.loader import EvaluationResults

MEAN_CLASS = "__mean__"
POOLED_CLASS = "__pooled__"
CLASS_LABELS = {
    MEAN_CLASS: "class mean (macro: mean over classes)",
    POOLED_CLASS: "pooled (micro: all images together)",
    VOLUMES: "volumes (each series / file one case; 3-D Dice)",
}
#: Readable metric names for tables and figures (``metrics.json`` keeps the machine names).
METRIC_LABELS = {
    "image_auroc": "Image AUROC",
    "image_ap": "Image AP",
    "image_f1_max": "Image F1-max",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "pixel_f1_max": "Pixel F1-max",
    "aupro": "AUPRO",
    "pixel_aupro": "AUPRO",
    "dice": "Dice",
    "iou": "IoU",
}
TEST_LABELS = {
    "delong": "DeLong (analytic)",
    "paired_bootstrap": "paired bootstrap",
    "wilcoxon": "Wilcoxon signed-rank",
    "sign_flip": "sign-flip permutation",
}

#: Known settings keys (nested keys dotted, e.g. ``ci.method``) and how the report names them; others are shown
#: under their own key, after these.
SETTING_LABELS = {
    "ci.method": "CI method",
    "ci_method": "CI method",
    "ci.level": "confidence level",
    "confidence_level": "confidence level",
    "ci.n_resamples": "bootstrap resamples",
    "n_resamples": "bootstrap resamples",
    "ci.resampling_unit": "resampling unit",
    "unit": "resampling unit",
    "resampling_unit": "resampling unit",
    "ci.method_used": "CI method used",
    "random_weights": "random frozen weights",
    "warning": "warning",
    "ci.stratification": "stratification",
    "ci.seed": "seed",
    "seed": "seed",
    "correction": "multiple-comparison correction",
    "fpr_limit": "AUPRO FPR limit",
    "threshold": "threshold (Dice/IoU)",
    "implementation": "metric implementation version",
    "metrics_version": "metric implementation version",
}


def flatten_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Flatten nested settings one level deep into dotted keys (``{"ci": {"seed": 0}}`` -> ``{"ci.seed": 0}``)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def is_missing(value: Any) -> bool:
    """True for ``None``, NaN and pandas NA."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def fmt_number(value: Any, digits: int = 3) -> str:
    """Format a number with a fixed number of decimals; missing values become ``""``."""
    return "" if is_missing(value) else f"{float(value):.{digits}f}"


def fmt_p(value: Any) -> str:
    """Format a p-value: three significant digits, ``< 0.0001`` below that."""
    if is_missing(value):
        return ""
    value = float(value)
    return "< 0.0001" if value < 1e-4 else f"{value:.3g}"


def confidence_percent(settings: dict[str, Any]) -> str:
    """The CI level as a percentage label (``95%``) from the settings (``ci.level`` or ``confidence_level``)."""
    flat = flatten_settings(settings)
    level = next((flat[k] for k in ("ci.level", "confidence_level", "ci_level") if k in flat), 0.95)
    try:
        level = float(level)
    except (TypeError, ValueError):
        level = 0.95
    percent = level * 100 if level <= 1 else level
    return f"{percent:g}%"


def format_result(row: pd.Series | dict[str, Any], digits: int = 3) -> str:
    """Format one metrics row: ``value [low, high]``, ``value`` without a CI, ``n/a (reason)`` if undefined."""
    if row.get("status") == "not_applicable" or is_missing(row.get("value")):
        reason = row.get("reason")
        return f"n/a ({reason})" if not is_missing(reason) and str(reason) else "n/a"
    value = fmt_number(row["value"], digits)
    if is_missing(row.get("ci_low")) or is_missing(row.get("ci_high")):
        return value
    return f"{value} [{fmt_number(row['ci_low'], digits)}, {fmt_number(row['ci_high'], digits)}]"


def dataset_label(settings: dict[str, Any], dataset: str) -> str:
    """How a report names a dataset: its recorded title, which says the source (``settings.dataset_titles``, e.g.
    ``brainmri — BrainMRI (Kaggle)``), or its name when the evaluation recorded none or the title is the name."""
    title = (settings.get("dataset_titles") or {}).get(dataset)
    return f"{dataset} — {title}" if title and title != dataset else dataset


def metric_label(metric: str) -> str:
    """Display name of a metric (``pixel_auroc`` -> ``Pixel AUROC``); unknown names are shown as they are."""
    return METRIC_LABELS.get(metric, metric)


def comparison_test_label(test: Any, n_resamples: Any = None, ci_n_resamples: Any = None) -> str:
    """Display name of a paired test with the resamples it used (``paired bootstrap, 2000 resamples``)."""
    label = TEST_LABELS.get(str(test), str(test))
    if not is_missing(n_resamples):
        return f"{label}, {int(n_resamples)} resamples"
    if not is_missing(ci_n_resamples):
        return f"{label} (CI: bootstrap, {int(ci_n_resamples)} resamples)"
    return label


def class_label(class_name: str) -> str:
    """Display name of a ``class_name`` (``__mean__`` -> ``mean over classes``)."""
    return CLASS_LABELS.get(class_name, class_name)


def class_order(names: pd.Series) -> list[str]:
    """Distinct class names: real classes sorted, then ``__mean__``, ``__pooled__`` and ``__volumes__``."""
    unique = list(dict.fromkeys(names.astype(str)))
    regular = sorted(n for n in unique if n not in CLASS_LABELS)
    return regular + [n for n in (MEAN_CLASS, POOLED_CLASS, VOLUMES) if n in unique]


def results_table(evaluation: EvaluationResults) -> pd.DataFrame:
    """Long results table, one row per model/dataset/class/metric, with a ``result`` display column."""
    frame = evaluation.results.copy()
    frame["result"] = [format_result(row) for _, row in frame.iterrows()]
    frame["reason"] = frame["reason"].where(frame["status"] == "not_applicable", None)
    class_rank = {name: k for k, name in enumerate(class_order(frame["class_name"]))}
    metric_rank = {name: k for k, name in enumerate(dict.fromkeys(frame["metric"]))}
    frame = frame.assign(_c=frame["class_name"].map(class_rank), _m=frame["metric"].map(metric_rank)).sort_values(
        ["model", "dataset", "_c", "_m"], kind="stable"
    )
    return frame.drop(columns=["_c", "_m"]).reset_index(drop=True)


def results_grids(table: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (model, dataset), a grid of classes (rows) by metrics (columns) of formatted results."""
    grids: dict[tuple[str, str], pd.DataFrame] = {}
    for (model, dataset), part in table.groupby(["model", "dataset"], sort=True):
        metrics = list(dict.fromkeys(part["metric"]))
        classes = list(dict.fromkeys(part["class_name"]))
        grid = pd.DataFrame("", index=[class_label(c) for c in classes], columns=[metric_label(m) for m in metrics])
        for _, row in part.iterrows():
            grid.loc[class_label(row["class_name"]), metric_label(row["metric"])] = row["result"]
        n_images = part.groupby("class_name", sort=False)["n_images"].max()
        grid.insert(0, "images", [fmt_number(n_images.get(c), 0) for c in classes])
        grid.index.name = "class"
        grids[(str(model), str(dataset))] = grid
    return grids


def not_zero_shot_marks(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(model, dataset) -> the rows' "not zero-shot (trained on ...)" mark, where the evaluation wrote one."""
    if "not_zero_shot" not in table.columns:  # an evaluation written before rows carried the mark
        return {}
    marked = table[table["not_zero_shot"].map(lambda v: isinstance(v, str) and bool(v))]
    return {(str(r["model"]), str(r["dataset"])): str(r["not_zero_shot"]) for _, r in marked.iterrows()}


def comparisons_table(evaluation: EvaluationResults) -> pd.DataFrame:
    """Comparisons with display columns ``estimate [CI]``, ``p``, ``p (adjusted)`` and ``effect size``."""
    frame = evaluation.comparisons.copy()
    if frame.empty:
        return frame.assign(comparison="", estimate_ci="", p="", p_adj="", effect="", test_label="", metric_label="")
    frame = frame.sort_values(["dataset", "class_name", "metric", "model_a", "model_b"], kind="stable")
    marks = frame["not_zero_shot"] if "not_zero_shot" in frame.columns else pd.Series(None, index=frame.index)
    frame["comparison"] = [
        f"{a} vs {b}" + (f" ({mark})" if isinstance(mark, str) and mark else "")
        for a, b, mark in zip(frame["model_a"], frame["model_b"], marks, strict=True)
    ]
    frame["estimate_ci"] = [
        format_result({"value": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "status": "ok"})
        for _, r in frame.iterrows()
    ]
    frame["p"] = frame["p_value"].map(fmt_p)
    frame["p_adj"] = [
        f"{fmt_p(p)} ({c})" if fmt_p(p) and not is_missing(c) else fmt_p(p)
        for p, c in zip(frame["p_adjusted"], frame["correction"], strict=True)
    ]
    frame["effect"] = frame["effect_size"].map(fmt_number)
    for column in ("n_resamples", "ci_n_resamples"):
        if column not in frame.columns:
            frame[column] = None
    frame["test_label"] = [
        comparison_test_label(t, b, c)
        for t, b, c in zip(frame["test"], frame["n_resamples"], frame["ci_n_resamples"], strict=True)
    ]
    frame["metric_label"] = frame["metric"].map(metric_label)
    if "n_differ" not in frame.columns:
        frame["n_differ"] = None
    frame["n_label"] = [
        comparison_n_label(t, n, d) for t, n, d in zip(frame["test"], frame["n"], frame["n_differ"], strict=True)
    ]
    return frame.reset_index(drop=True)


def comparison_n_label(test: str, n: Any, n_differ: Any) -> str:
    """What a comparison's ``n`` counts: images for DeLong and the bootstrap; paired abnormal images for the
    Wilcoxon test, with how many of them differ (pairs with equal values do not enter the signed-rank test)."""
    if is_missing(n):
        return ""
    if test == "wilcoxon":
        differ = "" if is_missing(n_differ) else f", {int(n_differ)} differ"
        return f"{int(n)} pairs{differ}"
    return f"{int(n)} images"


_PATH_RE = re.compile(r"^(~|/|\\\\|[A-Za-z]:[\\/]|\.{1,2}[\\/])|^\S*[\\/]\S*[\\/]\S*$")


def _looks_like_path(value: str) -> bool:
    """Absolute or ``./``-relative paths, and any space-free string with two or more separators."""
    return bool(_PATH_RE.search(value))


def _display_value(value: Any) -> str:
    if isinstance(value, str):
        return "[path omitted]" if _looks_like_path(value) else value
    if isinstance(value, dict):
        return ", ".join(f"{k}={_display_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return ", ".join(_display_value(v) for v in value)
    return "" if value is None else str(value)


def settings_table(settings: dict[str, Any]) -> pd.DataFrame:
    """The evaluation settings as ``setting``/``key``/``value`` rows, known keys first; paths are omitted."""
    flat = flatten_settings(settings)
    known = [k for k in SETTING_LABELS if k in flat]
    others = sorted(k for k in flat if k not in SETTING_LABELS)
    rows = [{"setting": SETTING_LABELS[k], "key": k, "value": _display_value(flat[k])} for k in known]
    rows += [{"setting": k, "key": k, "value": _display_value(flat[k])} for k in others]
    return pd.DataFrame(rows, columns=["setting", "key", "value"])
