"""The report's volume section: each volume (DICOM series, multi-frame object, NIfTI file) as one case.

From ``per_volume.csv`` (written by ``medad eval`` when the inputs held volumes): per model and dataset a table of
the volumes, highest volume score first (volume id, slices, label, volume score, 3-D Dice / IoU), and for the
highest-scored volume and the abnormal volume with the lowest 3-D Dice a strip of its slices in slice order
(``per_image.csv``'s ``slice_order``; at most :data:`MAX_SLICES`, evenly spaced along the volume), each slice
drawn as the best / worst cases are. Only pseudonymous volume and case ids appear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medad.reports.cases import CaseLoader
from medad.reports.loader import EvaluationResults
from medad.reports.plots import cases_figure
from medad.reports.tables import fmt_number

MAX_SLICES = 8
"""Slices drawn per volume: all of a short volume, else this many evenly spaced along it (first and last kept)."""
MAX_LISTED = 25
"""Volumes listed per model and dataset (highest volume score first); ``tables/volumes.csv`` holds them all."""
_HEADERS = {"volume_id": "volume id", "n_slices": "slices", "label": "label", "volume_score": "volume score",
            "dice": "3-D Dice", "iou": "3-D IoU"}  # fmt: skip


def _ranked(per_volume: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    """The volumes of one model and dataset, highest volume score first (ties by volume id)."""
    part = per_volume[(per_volume["model"] == model) & (per_volume["dataset"] == dataset)]
    return part.sort_values(["volume_score", "volume_id"], ascending=[False, True], kind="stable")


def drawn_volumes(ranked: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """The volumes whose slices are drawn: the highest-scored one, and the abnormal one with the lowest 3-D Dice."""
    out: list[tuple[str, pd.Series]] = []
    if not ranked.empty:
        out.append(("highest volume score", ranked.iloc[0]))
    abnormal = ranked[(ranked["label"] == 1).fillna(False) & ranked["dice"].notna()]
    if not abnormal.empty:
        worst = abnormal.sort_values(["dice", "volume_id"], kind="stable").iloc[0]
        if not out or worst["volume_id"] != out[0][1]["volume_id"]:
            out.append(("abnormal volume with the lowest 3-D Dice", worst))
    return out


def volume_slices(per_image: pd.DataFrame, model: str, volume_id: str, limit: int = MAX_SLICES) -> pd.DataFrame:
    """The per-image rows of one volume in slice order, at most ``limit`` evenly spaced (first and last kept)."""
    if "volume_id" not in per_image.columns:
        return per_image[:0]
    part = per_image[(per_image["model"] == model) & (per_image["volume_id"].astype(str) == volume_id)]
    part = part.sort_values("slice_order", kind="stable")
    if len(part) <= limit:
        return part
    keep = np.unique(np.linspace(0, len(part) - 1, limit).round().astype(int))
    return part.iloc[keep]


def _slice_caption(total: int) -> Callable[[pd.Series], str]:
    def caption(row: pd.Series) -> str:
        dice = fmt_number(row["dice"]) if pd.notna(row.get("dice")) else "n/a"
        order = int(row["slice_order"]) + 1
        return f"slice {order} of {total} ({row['case_id']})\nimage score {fmt_number(row['image_score'])}, Dice {dice}"

    return caption


def _shown(ranked: pd.DataFrame) -> pd.DataFrame:
    shown = ranked[list(_HEADERS)].head(MAX_LISTED).copy()
    for column in ("volume_score", "dice", "iou"):
        shown[column] = shown[column].map(fmt_number)
    shown["label"] = shown["label"].map({0: "normal", 1: "abnormal"}).astype("string").fillna("unlabelled")
    return shown.rename(columns=_HEADERS)


def volume_sections(
    evaluation: EvaluationResults,
    loader: CaseLoader,
    drawing: tuple[list[str], float | None],
    make_section: Callable[..., Any],
    make_figure: Callable[[str, str, bytes], Any],
) -> list[Any]:
    """The report's ``Volumes`` section and one sub-section per model and dataset (none without volumes).

    ``drawing`` is the models with random weights and the evaluation threshold; sections and figures are built
    with ``make_section(heading, level=..., paragraphs=..., tables=..., figures=...)`` and
    ``make_figure(name, caption, png)``.
    """
    per_volume = evaluation.per_volume
    if per_volume.empty:
        return []
    random_models, threshold = drawing
    score = ((evaluation.settings.get("volumes") or {}).get("score") or {}).get("definition", "see settings")
    intro = (
        f"Each volume (a DICOM series, a multi-frame object or a NIfTI file) is one case. Volume score: {score}. A "
        "volume is abnormal when any of its slices is. 3-D Dice / IoU: the predicted mask against the ground truth "
        "over all slices of the volume together. The volume rows of the results tables are metrics over volumes; "
        f"their intervals resample whole volumes. Up to {MAX_LISTED} volumes are listed per model and dataset "
        f"(all in tables/volumes.csv); the slices of two volumes are drawn in slice order (at most {MAX_SLICES}, "
        "evenly spaced along the volume)."
    )
    sections = [make_section("Volumes", paragraphs=[intro])]
    pairs = per_volume[["model", "dataset"]].drop_duplicates().sort_values(["model", "dataset"])
    for model, dataset in pairs.itertuples(index=False):
        ranked = _ranked(per_volume, model, dataset)
        figures = []
        for what, volume in drawn_volumes(ranked):
            rows = volume_slices(evaluation.per_image, model, str(volume["volume_id"]))
            views = loader.load(model, dataset, rows, _slice_caption(int(volume["n_slices"])))
            if not views:
                continue
            title = (f"{model} on {dataset} - {what}: {volume['volume_id']} (volume score "
                     f"{fmt_number(volume['volume_score'])}), slices in slice order")  # fmt: skip
            vmax = max(1.0, *(float(v.heatmap.max()) for v in views))
            vmin = min(0.0, *(float(v.heatmap.min()) for v in views))
            png = cases_figure(title, views, vmin=vmin, vmax=vmax, threshold=threshold,
                               random_weights=model in random_models)  # fmt: skip
            figures.append(make_figure(f"volume_{model}_{dataset}_{volume['volume_id']}", title, png))
        paragraphs = [] if figures else [f"Slices not drawn: {loader.unavailable_reason(model, dataset) or 'none'}."]
        table = (f"{model} on {dataset}: volumes, highest volume score first", _shown(ranked))
        heading = f"{model} on {dataset}: volumes"
        sections.append(make_section(heading, level=3, paragraphs=paragraphs, tables=[table], figures=figures))
    return sections
