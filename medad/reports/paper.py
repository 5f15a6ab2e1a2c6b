"""Report sections for reproducing the paper: the paper view (the paper's table of pixel metrics beside the
published figures) and the text class words each model was prompted with.

The class word is the key setting of a text-prompted model (``reference`` mode uses the released code's fixed
per-dataset words, ``clean`` mode real words), so the report shows the words that were actually used, read from
each predictions folder's ``meta.json`` (``class_words``: ``{dataset: {class_name: word}}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from medad.reports.cases import PredictionSource
from medad.reports.loader import EvaluationResults


def class_words_table(sources: Sequence[PredictionSource]) -> pd.DataFrame:
    """One row per model, dataset and class: the prompt word and the model's compat mode."""
    rows = []
    for source in sources:
        meta = source.reader.meta
        words = meta.get("class_words")
        if not isinstance(words, dict):
            continue
        for dataset, per_class in sorted(words.items()):
            if source.dataset is not None and dataset != source.dataset:
                continue
            for class_name, word in sorted(dict(per_class).items()):
                rows.append(
                    {
                        "model": source.model,
                        "dataset": dataset,
                        "class": class_name,
                        "word": word,
                        "compat": meta.get("compat", ""),
                    }
                )
    return pd.DataFrame(rows, columns=["model", "dataset", "class", "word", "compat"]).drop_duplicates()


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and pd.isna(value)) else f"{value:.1f}"


def _method_published(model: str, rows: Sequence[dict[str, Any]]) -> list[tuple[str, pd.DataFrame]]:
    """The published figures of a model's method on the datasets it was measured on, as one table (none when the
    method has none there)."""
    from medad.evaluation.paper_view import PUBLISHED_LABEL

    found = [
        {"dataset": row["dataset"], "published figures": p["figures"], "metrics": p["metrics"],
         "training data of the publication": p["training_data"], "zero-shot": p["zero_shot"], "source": p["source"]}
        for row in rows
        for p in row.get("published") or []
    ]  # fmt: skip
    if not found:
        return []
    method = rows[0]["method"]
    return [(f"{model} ({method}): its publication's figures, {PUBLISHED_LABEL}", pd.DataFrame(found))]


def paper_view_tables(
    evaluation: EvaluationResults, sources: Sequence[PredictionSource] = ()
) -> list[tuple[str, pd.DataFrame]]:
    """The measured paper table (one per model, each followed by its method's published figures) and the whole
    published block, as (caption, table) pairs."""
    from medad.evaluation.paper_view import DATASET_NAMES, PAPER_METRICS, paper_view

    metas = {source.model: source.reader.meta for source in sources}
    view = paper_view(evaluation.results.to_dict("records"), metas, evaluation.settings.get("dataset_titles"))
    if not view["measured"]:
        return []
    labels = dict(PAPER_METRICS)
    tables = []
    measured = pd.DataFrame(view["measured"] + view["averages"])
    for model, frame in measured.groupby("model", sort=False):
        shown = frame[["dataset", *labels]].rename(columns=labels)
        for column in labels.values():
            shown[column] = shown[column].map(_fmt)
        shown["beside the published figures"] = frame["comparable"].fillna("").to_numpy()
        if "zero_shot" in frame and frame["zero_shot"].notna().any():
            shown["zero-shot"] = frame["zero_shot"].fillna("").to_numpy()
        caption = f"{model}: measured by medad (percent, class mean)"
        if frame["comparable"].astype(str).str.startswith("NOT COMPARABLE").any():
            caption += " - NOT COMPARABLE with the published figures below (see the last column)"
        tables.append((caption, shown.reset_index(drop=True)))
        if "method" in frame:
            mine = [r for r in view["measured"] if r["model"] == model and r.get("method")]
            tables += _method_published(str(model), mine) if mine else []
    columns = [*DATASET_NAMES, "industrial average", "medical average"]
    published = pd.DataFrame(
        [
            {"method": r["method"], "medad model": ", ".join(r["models"]), "source": r["source"],
             "aux training": r["aux"], "metrics": r["pair"]}
            | {DATASET_NAMES.get(c, c): r["values"].get(c, "") for c in columns}
            for r in view["published"]["rows"]
        ]
    )  # fmt: skip
    tables.append((f"Pixel level, {view['published']['label']} (quoted from docs/comparison.md)", published))
    return tables


def epoch_sweep_tables(evaluation: EvaluationResults) -> list[tuple[str, pd.DataFrame]]:
    """The released code's best-epoch-on-test figures (``epoch_sweep.json``) beside the fixed-epoch headline."""
    import json

    from medad.evaluation.paper_view import PAPER_METRICS, SELECTION_LABEL, SWEEP_FILE

    path = evaluation.folder / SWEEP_FILE
    if not path.is_file():
        return []
    sweep = json.loads(path.read_text(encoding="utf-8"))
    rows = [
        {
            "model": model,
            "fixed epoch (headline)": entry["fixed_epoch"],
            "pixel AUROC, fixed epoch": _fmt(
                None if entry["fixed_criterion"] is None else 100 * entry["fixed_criterion"]
            ),
            "best epoch": entry["best_epoch"],
            f"pixel AUROC, {SELECTION_LABEL}": _fmt(
                None if entry["best_criterion"] is None else 100 * entry["best_criterion"]
            ),
        }
        for model, entry in sweep["models"].items()
    ]
    tables = [(f"Epoch {SELECTION_LABEL}", pd.DataFrame(rows))]
    for model, entry in sweep["models"].items():
        best = next((e for e in entry["per_epoch"] if e["epoch"] == entry["best_epoch"]), None)
        if best and best["paper_view"]:
            frame = pd.DataFrame(best["paper_view"])[["dataset", *(metric for metric, _ in PAPER_METRICS)]]
            for column in frame.columns[1:]:
                frame[column] = frame[column].map(_fmt)
            tables.append((f"{model}, epoch {entry['best_epoch']}: {SELECTION_LABEL}", frame))
    return tables


def study_notes(sources: Sequence[PredictionSource]) -> list[str]:
    """One sentence per model whose card records what its study pinned or marked (``study``: the checkpoint epoch
    it scores with, why it is not zero-shot)."""
    notes: dict[str, list[str]] = {}
    for source in sources:
        card = source.reader.meta.get("model")
        study = card.get("study") if isinstance(card, dict) else None
        if not isinstance(study, dict) or source.model in notes:
            continue
        said = []
        if study.get("score_epoch") is not None:
            said.append(
                f"scored with the checkpoint of epoch {study['score_epoch']} of {study.get('epochs')} (pinned in the "
                "protocol: `training.score_epoch`), not the last one"
            )
        for target, why in sorted(dict(study.get("not_zero_shot") or {}).items()):
            said.append(f"NOT ZERO-SHOT on {target} ({why}; the protocol allows it)")
        notes[source.model] = said
    return [f"{model}: {'; '.join(said)}." for model, said in notes.items() if said]


def paper_sections(
    evaluation: EvaluationResults, sources: Sequence[PredictionSource], make_section: Callable[..., Any]
) -> list[Any]:
    """The report's reproduction sections, built with ``make_section(heading, paragraphs=..., tables=...)``."""
    sections = []
    notes = study_notes(sources)
    if notes:
        sections.append(make_section("Pinned checkpoints and zero-shot marks", paragraphs=notes))
    tables = paper_view_tables(evaluation, sources)
    if tables:
        resolution = (evaluation.settings.get("resolution") or {}).get("mode", "native")
        text = (
            "The paper's table: per target dataset the pixel metrics as the unweighted mean over its classes, in "
            f"percent, evaluated at {resolution} resolution; domain averages over the datasets evaluated. The "
            "published block is quoted from the papers and repositories named in each row, never re-measured; "
            "the second number of a published pair is a different metric from row to row (PRO, max-F1 or AP), so "
            "compare it only with the matching medad column. A model of a re-derived method (by registry name) is "
            "followed by its publication's figures on the same datasets, with the training data that publication "
            "used and whether they include the target (not zero-shot) or another medical set."
        )
        sections.append(make_section("Paper view", paragraphs=[text], tables=tables))
    sweep = epoch_sweep_tables(evaluation)
    if sweep:
        text = (
            "Every epoch's adapters were scored on the target test data and the best epoch by the mean target pixel "
            "AUROC (class mean) picked, as the released code's per-epoch test loop allows. These figures are "
            "optimistic (the epoch was selected on the test data) and are not the headline, which is the fixed "
            "last epoch above."
        )
        sections.append(make_section("Epoch selected on the test data", paragraphs=[text], tables=sweep))
    words = class_words_table(sources)
    if words.empty:
        return sections
    text = (
        "The word inserted into every prompt of the ensemble, per class. 'reference' mode uses the released "
        "code's fixed words (the class folder for MVTec AD, MPDD and BTAD, 'Data' for VisA, '01' for ISIC and "
        "the CVC sets, 'Medical_Dataset' for TN3K); 'clean' mode real words."
    )
    return [*sections, make_section("Text class words", paragraphs=[text], tables=[("Class words used", words)])]
