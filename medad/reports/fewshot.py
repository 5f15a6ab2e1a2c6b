"""The few-shot part of a report: per dataset, each model's metrics at 0, 1, 2, 4, ... shots (the mean over the
reference draws with its interval, ``metrics.json`` ``fewshot`` rows, :mod:`medad.evaluation.fewshot`) as a table
(rows named ``model · k-shot``) and a plot of metric against shots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medad.metrics import MEAN
from medad.reports.plots import _fixed_style, _new_figure, figure_png
from medad.reports.tables import format_result, metric_label

FEWSHOT_COLUMNS = ["model", "shots", "dataset", "class_name", "metric", "value", "ci_low", "ci_high", "n_draws",
                   "n_images", "status"]  # fmt: skip


def load_fewshot(folder: Path) -> pd.DataFrame:
    """The ``fewshot`` rows of an evaluation folder's ``metrics.json`` (empty when it has none)."""
    try:
        rows = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("fewshot") or []
    except (OSError, ValueError, AttributeError):
        rows = []
    frame = pd.DataFrame(rows)
    for column in FEWSHOT_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return frame[FEWSHOT_COLUMNS]


def shots_label(model: str, shots: int) -> str:
    """A model at a shot count, as the report names it: ``ad_dinov3 · 4-shot``."""
    return f"{model} · {int(shots)}-shot"


def fewshot_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per dataset, the class-mean rows: one row per model and shot count, one column per metric."""
    means = frame[frame["class_name"] == MEAN]
    out: dict[str, pd.DataFrame] = {}
    for dataset, part in means.groupby("dataset", sort=True):
        cells = part.assign(
            row=[shots_label(m, k) for m, k in zip(part["model"], part["shots"], strict=True)],
            cell=[format_result(r) + f" ({int(r['n_draws'])} draws)" for r in part.to_dict("records")],
            metric=part["metric"].map(metric_label),
        )
        table = cells.pivot_table(index=["model", "shots", "row"], columns="metric", values="cell", aggfunc="first")
        table = table.reset_index().sort_values(["model", "shots"]).drop(columns=["model", "shots"])
        out[str(dataset)] = table.rename(columns={"row": "model · shots"}).reset_index(drop=True)
    return out


def fewshot_figure(dataset: str, frame: pd.DataFrame) -> bytes:
    """Metric against shots for every model on ``dataset`` (class mean; bars: the interval), one panel a metric."""
    part = frame[(frame["dataset"] == dataset) & (frame["class_name"] == MEAN) & frame["value"].notna()]
    metrics = list(dict.fromkeys(part["metric"]))
    with _fixed_style():
        fig = _new_figure(3.2 * max(len(metrics), 1), 3.0)
        axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=False):
            for model, rows in part[part["metric"] == metric].groupby("model", sort=True):
                rows = rows.sort_values("shots")
                low = (rows["value"] - rows["ci_low"].fillna(rows["value"])).clip(lower=0)
                high = (rows["ci_high"].fillna(rows["value"]) - rows["value"]).clip(lower=0)
                ax.errorbar(rows["shots"], rows["value"], yerr=[low, high], marker="o", capsize=3, label=str(model))
            ax.set_title(metric_label(metric))
            ax.set_xlabel("shots (normal reference images)")
            ax.set_xticks(sorted(part["shots"].unique()))
            ax.legend(fontsize="small")
        return figure_png(fig)
