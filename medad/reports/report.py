"""Build the evaluation report: ``report.md``, a standalone ``report.html``, tables and figures.

Layout of the report folder::

    report.html            standalone: CSS inline, figures embedded as base64 PNG, no scripts, no network
    report.md              the same content; figures referenced as figures/*.png
    figures/*.png          curves, score histograms, best/worst cases (deterministic bytes)
    tables/results.csv     one row per model/dataset/class/metric, with the display string ``result``
    tables/results.json
    tables/comparisons.csv paired comparisons with adjusted p-values and effect sizes
    tables/comparisons.json
    tables/settings.json   CI method, resamples, unit, seed, ... and the models run with random weights
    tables/cases.csv       the best/worst cases shown (case_id only)
    tables/volumes.csv     per volume and model: volume score, label, 3-D Dice / IoU (when the inputs held volumes)

Only ``case_id`` identifies an image anywhere in the report; image paths are never written.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medad.evaluation.recorded import recorded_predictions
from medad.reports.cases import (
    CASE_GROUPS,
    CaseLoader,
    ManifestArg,
    PredictionsArg,
    has_random_weights,
    private_manifests,
    resolve_manifests,
    resolve_predictions,
    select_cases,
)
from medad.reports.fewshot import fewshot_figure, fewshot_tables, load_fewshot
from medad.reports.loader import EvaluationResults, load_evaluation
from medad.reports.paper import paper_sections
from medad.reports.plots import (
    CURVE_METRICS,
    RESEARCH_NOTICE,
    CurveAreas,
    cases_figure,
    curves_figure,
    histogram_figure,
)
from medad.reports.tables import (
    class_label,
    class_order,
    comparisons_table,
    confidence_percent,
    dataset_label,
    fmt_number,
    not_zero_shot_marks,
    results_grids,
    results_table,
    settings_table,
)
from medad.reports.volumes import volume_sections
from medad.utils.colors import HEATMAP_CMAP
from medad.utils.io import write_bytes_atomic, write_json_atomic, write_text_atomic

DEFAULT_TITLE = "medad evaluation report"
_CASE_COLUMNS = ["group", "model", "dataset", "rank", "case_id", "class_name", "label", "image_score",
                 "max_pixel_score", "dice"]  # fmt: skip
_CASE_HEADERS = {"case_id": "case id", "class_name": "class", "image_score": "image score",
                 "max_pixel_score": "max pixel score", "dice": "Dice"}  # fmt: skip


@dataclass
class _Figure:
    name: str
    caption: str
    png: bytes


@dataclass
class _Section:
    """A report section: heading, paragraphs, tables (caption, DataFrame) and figures, in that order."""

    heading: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[_Figure] = field(default_factory=list)


def _figure(name: str, caption: str, png: bytes) -> _Figure:
    """A figure with a file-safe name (for sections built outside this module)."""
    return _Figure(_safe_name(name), caption, png)


def _safe_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-.") or "x" for p in parts)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", double_precision=10)) if len(frame) else []


def _write_table(folder: Path, stem: str, frame: pd.DataFrame) -> None:
    write_text_atomic(folder / f"{stem}.csv", frame.to_csv(index=False, lineterminator="\n"))
    write_json_atomic(folder / f"{stem}.json", _records(frame))


def _random_weight_models(evaluation: EvaluationResults, sources: Sequence[Any], run_dir: Path | None) -> list[str]:
    """Models flagged ``random_weights: true`` in predictions meta, model cards in the run, the settings
    (``random_weights: {model: bool}`` as ``medad.evaluation.evaluate`` writes it) or the metrics rows."""
    flagged = {s.model for s in sources if s.random_weights}
    settings = evaluation.settings
    per_model = settings.get("random_weights")
    if isinstance(per_model, dict):
        flagged |= {str(name) for name, flag in per_model.items() if flag is True}
    if "random_weights" in evaluation.results:
        rows = evaluation.results
        flagged |= set(rows.loc[rows["random_weights"].fillna(False).astype(bool), "model"].astype(str))
    for key in ("models", "model_cards", "cards"):
        entries = settings.get(key)
        if isinstance(entries, dict):
            flagged |= {str(name) for name, card in entries.items() if has_random_weights(card)}
        elif isinstance(entries, list):
            flagged |= {str(c.get("name", "?")) for c in entries if isinstance(c, dict) and has_random_weights(c)}
    if settings.get("random_weights") is True:
        flagged |= set(evaluation.results["model"].astype(str))
    if run_dir is not None:
        for card_path in sorted(run_dir.rglob("card.json")) + sorted(run_dir.rglob("meta.json")):
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(card, dict) and has_random_weights(card):
                name = card.get("name") or (card.get("model") if isinstance(card.get("model"), str) else None)
                if isinstance(card.get("model"), dict):
                    name = card["model"].get("name", name)
                flagged.add(str(name) if name else card_path.parent.name)
    return sorted(flagged)


def _curve_areas(results: pd.DataFrame, dataset: str, class_name: str) -> CurveAreas:
    """Per model and curve key, the metric value shown in the legend, or the reason it is undefined."""
    part = results[(results["dataset"].astype(str) == dataset) & (results["class_name"].astype(str) == class_name)]
    areas: dict[str, dict[str, float | str]] = {}
    for key, (metric, _) in CURVE_METRICS.items():
        for _, row in part[part["metric"] == metric].iterrows():
            entry = areas.setdefault(str(row["model"]), {})
            if row["status"] == "not_applicable" or pd.isna(row["value"]):
                entry[key] = str(row["reason"]) if isinstance(row["reason"], str) and row["reason"] else "undefined"
            else:
                entry[key] = float(row["value"])
    return areas


def _discover_predictions(run_dir: Path) -> list[Path]:
    """Prediction folders (a ``chunks/`` folder next to a ``meta.json``) inside a protocol run folder."""
    return sorted(p.parent for p in run_dir.rglob("chunks") if p.is_dir() and (p.parent / "meta.json").is_file())


def _case_caption(row: pd.Series) -> str:
    label = {0: "normal", 1: "abnormal"}.get(row["label"] if pd.notna(row["label"]) else -1, "unlabelled")
    dice = f", Dice {fmt_number(row['dice'])}" if pd.notna(row.get("dice")) else ", Dice n/a"
    return f"{row['case_id']} ({row['class_name']}, {label})\nimage score {fmt_number(row['image_score'])}{dice}"


def _case_sections(
    per_image: pd.DataFrame, loader: CaseLoader, random_models: list[str], n_cases: int, threshold: float | None
) -> tuple[list[_Section], list[pd.DataFrame]]:
    """Per model and dataset, the best / worst cases: their tables and figures, and the rows shown."""
    sections: list[_Section] = []
    cases_rows: list[pd.DataFrame] = []
    pairs = per_image[["model", "dataset"]].drop_duplicates().sort_values(["model", "dataset"]).itertuples(index=False)
    for model, dataset in pairs:
        section = _Section(f"{model} on {dataset}", level=3)
        reason = loader.unavailable_reason(model, dataset)
        if reason is not None:
            section.paragraphs.append(f"Heatmaps not shown: {reason}.")
        groups = select_cases(per_image, model, dataset, n_cases)
        for group, rows in groups.items():
            if rows.empty:
                if group == "best" and not groups["missed"].empty:  # abnormal images, none with Dice > 0
                    section.paragraphs.append("Best: none - no abnormal image has a Dice above 0 at the threshold.")
                continue
            table = rows.assign(group=group, rank=range(1, len(rows) + 1))[_CASE_COLUMNS]
            cases_rows.append(table)
            shown = table[["rank", "case_id", "class_name", "label", "image_score", "max_pixel_score", "dice"]].copy()
            for column in ("image_score", "max_pixel_score", "dice"):
                shown[column] = shown[column].map(fmt_number)
            shown["label"] = shown["label"].astype("string").fillna("")
            shown = shown.rename(columns=_CASE_HEADERS)
            section.tables.append((CASE_GROUPS[group], shown))
            views = loader.load(model, dataset, rows, _case_caption)
            if views:
                title = f"{model} on {dataset} - {CASE_GROUPS[group]}"
                vmax = max(1.0, *(float(v.heatmap.max()) for v in views))
                vmin = min(0.0, *(float(v.heatmap.min()) for v in views))
                random = model in random_models
                png = cases_figure(title, views, vmin=vmin, vmax=vmax, threshold=threshold, random_weights=random)
                section.figures.append(_Figure(_safe_name("cases", model, dataset, group), title, png))
        sections.append(section)
    return sections, cases_rows


def _build_sections(
    evaluation: EvaluationResults,
    loader: CaseLoader,
    random_models: list[str],
    n_cases: int,
) -> tuple[list[_Section], dict[str, pd.DataFrame]]:
    settings = evaluation.settings
    ci_label = f"{confidence_percent(settings)} CI"
    sections: list[_Section] = []

    notice = _Section("About this report")
    notice.paragraphs.append(
        f"{RESEARCH_NOTICE}. Results are given as value [{ci_label} low, high]; 'n/a (reason)' marks a metric "
        "that is not defined on these images. Images are identified by pseudonymous case ids only."
    )
    sections.append(notice)

    settings_frame = settings_table(settings)
    section = _Section("Settings")
    section.tables.append(("Evaluation settings", settings_frame[["setting", "value"]]))
    sections.append(section)

    results = results_table(evaluation)
    section = _Section("Results")
    section.paragraphs.append(f"Each cell: value [{ci_label}]. 'images' is the number of images in the row.")
    marks = not_zero_shot_marks(results)
    for (model, dataset), grid in results_grids(results).items():
        mark = f" — {marks[model, dataset]}" if (model, dataset) in marks else ""
        section.tables.append((f"{model} on {dataset_label(settings, dataset)}{mark}", grid.reset_index()))
    sections.append(section)

    fewshot = load_fewshot(evaluation.folder)
    if not fewshot.empty:
        sections.append(_fewshot_section(fewshot, ci_label, settings))

    comparisons = comparisons_table(evaluation)
    section = _Section("Comparisons")
    if comparisons.empty:
        section.paragraphs.append("No paired comparisons were computed for this evaluation.")
    else:
        section.paragraphs.append(
            f"Difference model A - model B with its {ci_label}; p-values adjusted for multiple comparisons with "
            "the correction named in brackets; effect size as recorded by the test. A test that resamples names "
            "its number of resamples B; its p-value is (count + 1) / (B + 1), never below 1 / (B + 1). 'n' counts "
            "the images compared (DeLong, bootstrap) or the paired abnormal images with a value for both models "
            "(Wilcoxon; only the pairs that differ enter its signed-rank test, and their number is given)."
        )
        shown = comparisons[
            ["dataset", "class_name", "metric_label", "comparison", "test_label", "estimate_ci", "p", "p_adj",
             "effect", "n_label"]
        ].rename(columns={"class_name": "class", "metric_label": "metric", "test_label": "test (resamples)",
                          "estimate_ci": "estimate [CI]", "p_adj": "p (adjusted)",
                          "effect": "effect size", "n_label": "n"})  # fmt: skip
        shown["class"] = shown["class"].map(class_label)
        section.tables.append(("Paired comparisons", shown))
    sections.append(section)

    section = _Section("Curves")
    fpr_limit = settings.get("fpr_limit")
    fpr_limit = float(fpr_limit) if isinstance(fpr_limit, (int, float)) else None
    datasets = sorted({key[1] for key in evaluation.curves})
    for dataset in datasets:
        classes = class_order(pd.Series([k[2] for k in evaluation.curves if k[1] == dataset]))
        for class_name in classes:
            per_model = {k[0]: v for k, v in evaluation.curves.items() if k[1] == dataset and k[2] == class_name}
            title = f"{dataset} - {class_label(class_name)}"
            png = curves_figure(title, per_model, fpr_limit, _curve_areas(evaluation.results, dataset, class_name))
            section.figures.append(_Figure(_safe_name("curves", dataset, class_name), title, png))
    if not section.figures:
        section.paragraphs.append("No curves were recorded (curves.json is absent or empty).")
    sections.append(section)

    per_image = evaluation.per_image
    section = _Section("Image-score distributions")
    section.paragraphs.append("Histograms of image scores of normal and abnormal images; well-separated is better.")
    for dataset in sorted(per_image["dataset"].dropna().unique()):
        png = histogram_figure(str(dataset), per_image[per_image["dataset"] == dataset])
        section.figures.append(_Figure(_safe_name("hist", str(dataset)), f"Image scores on {dataset}", png))
    if per_image.empty:
        section.paragraphs[0] = "No per-image results were recorded (per_image.csv is absent or empty)."
    sections.append(section)

    threshold = settings.get("threshold")
    threshold = float(threshold) if isinstance(threshold, (int, float)) else None
    threshold_text = fmt_number(threshold) if threshold is not None else "recorded in the evaluation"
    sections.append(_Section("Best and worst cases"))
    sections[-1].paragraphs.append(
        f"Per model and dataset, up to {n_cases} images per group. Abnormal images are ranked by their per-image "
        f"pixel quality (Dice at the threshold {threshold_text}); normal images by image score. Heatmaps use the "
        f"perceptually uniform '{HEATMAP_CMAP}' colormap on a shared scale; the cyan contour is the predicted mask "
        "(heatmap >= threshold), the magenta contour the ground truth - the same colours as the exports."
    )
    case_sections, cases_rows = _case_sections(per_image, loader, random_models, n_cases, threshold)
    sections += case_sections
    sections += volume_sections(evaluation, loader, (random_models, threshold), _Section, _figure)

    cases = pd.concat(cases_rows, ignore_index=True) if cases_rows else pd.DataFrame(columns=_CASE_COLUMNS)
    settings_out = settings_frame.assign(value=settings_frame["value"].astype(str))
    tables = {
        "results": results,
        "comparisons": comparisons,
        "cases": cases,
        "settings": settings_out,
    }
    if not evaluation.per_volume.empty:
        tables["volumes"] = evaluation.per_volume
    if not fewshot.empty:
        tables["fewshot"] = fewshot
    if random_models:
        flagged = {"setting": "models with random weights", "key": "random_weights", "value": ", ".join(random_models)}
        tables["settings"] = pd.concat([settings_out, pd.DataFrame([flagged])], ignore_index=True)
    return sections, tables


def _fewshot_section(fewshot: pd.DataFrame, ci_label: str, settings: dict[str, Any]) -> _Section:
    """Metrics against shots per model: a table and a plot per dataset (class mean)."""
    section = _Section("Few-shot")
    section.paragraphs.append(
        f"Each model at 0 shots (its zero-shot run) and with k normal reference images; each cell: the mean over the "
        f"reference draws [{ci_label}]. {settings.get('fewshot', '')}"
    )
    for dataset, table in fewshot_tables(fewshot).items():
        name = dataset_label(settings, dataset)
        section.tables.append((f"Few-shot on {name} (class mean)", table))
        png = fewshot_figure(dataset, fewshot)
        section.figures.append(_Figure(_safe_name("fewshot", dataset), f"Metrics against shots on {name}", png))
    return section


def _banner_text(random_models: list[str]) -> str:
    return (
        f"RANDOM WEIGHTS: {', '.join(random_models)} ran with randomly initialised weights. Their numbers test "
        "the pipeline only and say nothing about the method; do not report them."
    )


def _cell_text(value: Any) -> str:
    missing = value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value))
    return "" if missing else str(value).replace("\n", " ")


def _md_cell(value: Any) -> str:
    return _cell_text(value).replace("|", "\\|")


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _render_markdown(title: str, stamp: str, banner: str | None, sections: list[_Section]) -> str:
    lines = [f"# {title}", "", f"Generated at {stamp}.", ""]
    if banner:
        lines += [f"> **WARNING - {banner}**", ""]
    for section in sections:
        lines += ["#" * section.level + f" {section.heading}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        for caption, frame in section.tables:
            lines += [f"**{caption}**", "", _md_table(frame), ""]
        for figure in section.figures:
            lines += [f"![{figure.caption}](figures/{figure.name}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}
caption{text-align:left;font-weight:bold;padding:.3em 0}
.banner{background:#b00020;color:#fff;padding:1em;font-weight:bold;border-radius:4px;margin:1em 0}
.notice{background:#fff4e5;border-left:4px solid #e69500;padding:.6em 1em}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
.stamp{color:#666}
"""


def _html_table(caption: str, frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell_text(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    caption = html.escape(caption)
    return f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_html(title: str, stamp: str, banner: str | None, sections: list[_Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="stamp">Generated at {html.escape(stamp)}.</p>',
    ]
    if banner:
        parts.append(f'<div class="banner" role="alert">WARNING - {html.escape(banner)}</div>')
    for section in sections:
        level = section.level
        parts.append(f"<h{level}>{html.escape(section.heading)}</h{level}>")
        css = ' class="notice"' if section.heading == "About this report" else ""
        parts += [f"<p{css}>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [_html_table(caption, frame) for caption, frame in section.tables]
        for figure in section.figures:
            data = base64.b64encode(figure.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _dedupe_figure_names(sections: list[_Section]) -> None:
    seen: dict[str, int] = {}
    for figure in (f for s in sections for f in s.figures):
        count = seen.get(figure.name, 0)
        seen[figure.name] = count + 1
        if count:
            figure.name = f"{figure.name}-{count + 1}"


def _default_out_dir(eval_dir: Path) -> Path:
    return eval_dir.parent / "report" if eval_dir.name == "evaluation" else eval_dir / "report"


def build_report(
    eval_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    predictions: PredictionsArg = None,
    manifest: ManifestArg = None,
    title: str = DEFAULT_TITLE,
    n_cases: int = 4,
    generated_at: dt.datetime | str | None = None,
) -> Path:
    """Write the report of an evaluation folder and return the path of ``report.html``.

    Args:
        eval_dir: an evaluation folder (holding ``metrics.json``), or a protocol run folder with one under
            ``evaluation/``; in a run folder, predictions folders (``chunks/`` + ``meta.json``) are found
            automatically when ``predictions`` is not given; else those the evaluation recorded in its
            ``predictions.json``.
        out_dir: report folder; default ``<run>/report`` next to ``evaluation/``, else ``<eval_dir>/report``.
        predictions: predictions folder(s) to draw heatmaps from and read ``random_weights`` flags: a path, a
            list of paths, or a mapping keyed by model name or ``(model, dataset)``.
        manifest: the evaluated manifest (DataFrame or ``.csv``/``.json`` file; the shareable
            ``predictions/manifest.csv`` is replaced by its private copy), a list of them, or a mapping dataset ->
            one; default: the private manifests ``medad score`` saved beside the predictions folders.
        title: report title.
        n_cases: images shown per best/worst group.
        generated_at: header timestamp (default: now, UTC); the only part of the output that varies.

    Returns:
        Path of the written ``report.html``.

    Raises:
        DataError: no evaluation folder found, malformed result files, or predictions/manifest that do not
            match the evaluation.
    """
    root = Path(eval_dir)
    evaluation = load_evaluation(root)
    run_dir = root if evaluation.folder != root else None
    out = Path(out_dir) if out_dir is not None else _default_out_dir(evaluation.folder)
    models = sorted(set(evaluation.results["model"].astype(str)) | set(evaluation.per_image["model"].astype(str)))
    if predictions is None:  # a run folder's own, else those the evaluation recorded (predictions.json)
        found = _discover_predictions(run_dir) if run_dir is not None else []
        predictions = found or recorded_predictions(evaluation.folder) or None
    sources = resolve_predictions(predictions, models)
    loader = CaseLoader(sources, resolve_manifests(manifest) if manifest is not None else private_manifests(sources))
    random_models = _random_weight_models(evaluation, sources, run_dir)
    loader.check(evaluation.per_image)

    sections, tables = _build_sections(evaluation, loader, random_models, n_cases)
    sections[2:2] = paper_sections(evaluation, sources, _Section)  # after the settings: medad/reports/paper.py
    if isinstance(generated_at, dt.datetime):
        stamp = generated_at.isoformat(timespec="seconds")
    elif isinstance(generated_at, str):
        stamp = generated_at
    else:
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    banner = _banner_text(random_models) if random_models else None

    _dedupe_figure_names(sections)
    for section in sections:
        for figure in section.figures:
            write_bytes_atomic(out / "figures" / f"{figure.name}.png", figure.png)
    for stem, frame in tables.items():
        _write_table(out / "tables", stem, frame)
    write_text_atomic(out / "report.md", _render_markdown(title, stamp, banner, sections))
    html_path = out / "report.html"
    write_text_atomic(html_path, _render_html(title, stamp, banner, sections))
    return html_path
