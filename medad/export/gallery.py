"""An offline review gallery: one ``index.html`` beside the exported PNGs, opened straight from disk.

No network and no external scripts: CSS and JavaScript are inline, case data is embedded as JSON, and images
are relative links to the PNGs in the same folder. Cases are grouped by dataset, in tables with column labels;
rows can be sorted by score and filtered with a score slider that starts below the lowest score. A volume (the
slices of one DICOM series, multi-frame object or NIfTI file, cases sharing a ``volume_id``) is one row: its volume
score is the highest slice score (the default volume score of ``medad eval``), and a slice slider browses its slices
in ``slice_order`` (along the slice normal). Only pseudonymous case and volume ids appear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import medad
from medad.export.thresholds import Threshold, score_text
from medad.utils.colors import GT_CONTOUR, HEATMAP_CMAP, PRED_CONTOUR
from medad.utils.io import write_text_atomic

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>medad review gallery - RESEARCH USE ONLY__TITLE_RANDOM__</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{position:sticky;top:0;background:#222;padding:8px 12px;border-bottom:2px solid #c00;z-index:1}
.ruo{color:#f44;font-weight:bold}
.random{background:#c00;color:#fff;font-weight:bold;font-size:18px;padding:6px 10px;margin-bottom:6px}
.swatch{display:inline-block;width:14px;height:4px;vertical-align:middle;margin:0 4px}
section{padding:4px 12px}
h2{font-size:16px;margin:10px 0 4px}
table{border-collapse:collapse}
th{font-size:12px;text-align:left;padding:2px 6px;color:#aaa;border-bottom:1px solid #444}
td{padding:4px 6px;border-bottom:1px solid #333;font-size:12px;vertical-align:middle}
tr.flag td:first-child{border-left:3px solid __PRED__}
td img{width:136px;height:136px;object-fit:contain;background:#000;image-rendering:pixelated;display:block}
td img.overlay{width:300px}
input.slice{width:136px;display:block}
label{margin-right:14px;font-size:14px}
a{color:#0cc}
</style></head><body>
<header>__RANDOM__<span class="ruo">RESEARCH USE ONLY - not for diagnostic use.</span>
model <b id="model">__MODEL__</b> &middot; medad __VERSION__ &middot; mask threshold __THRESHOLD__ &middot;
<span id="shown"></span><br>
<span class="swatch" style="background:__PRED__"></span>predicted mask contour
<span class="swatch" style="background:__GT__"></span>ground-truth contour (where a mask exists) &middot;
overlay: image | opaque __CMAP__ anomaly map with its colour bar<br>
<label>Sort <select id="sort"><option value="score-desc">score, high first</option>
<option value="score-asc">score, low first</option><option value="case">case id</option></select></label>
<label>Show scores &ge; <input id="min-score" type="range" min="__MIN__" max="__MAX__" step="__STEP__" value="__MIN__">
<output id="min-value"></output></label></header>
<main id="grid"></main>
<script type="application/json" id="cases">__DATA__</script>
<script>
"use strict";
const cases = JSON.parse(document.getElementById("cases").textContent);
const grid = document.getElementById("grid");
const sortBox = document.getElementById("sort");
const slider = document.getElementById("min-score");
const COLUMNS = ["case", "image", "anomaly map (grey: black 0 to white 1)", "predicted mask", "overlay (contours)",
  "score", "label", "ground truth"];
const LABELS = {"0": "normal", "1": "anomalous"};
const bodies = {};
function cell(row, child) {
  const td = document.createElement("td");
  if (typeof child === "string") { td.textContent = child; } else { td.appendChild(child); }
  row.appendChild(td);
  return td;
}
function picture(src, kind) {
  const img = document.createElement("img");
  img.src = src;
  img.alt = kind;
  img.title = kind;
  if (kind === "overlay") { img.className = "overlay"; }
  return img;
}
function section(dataset) {
  if (bodies[dataset]) { return bodies[dataset]; }
  const box = document.createElement("section");
  box.dataset.dataset = dataset;
  const title = document.createElement("h2");
  const n = cases.filter(function (c) { return c.dataset === dataset; }).length;
  title.textContent = "dataset " + (dataset || "(unnamed)") + " - " + n + " case" + (n === 1 ? "" : "s")
    + " (a volume is one case)";
  box.appendChild(title);
  const table = document.createElement("table");
  const head = document.createElement("tr");
  COLUMNS.forEach(function (name) {
    const th = document.createElement("th");
    th.textContent = name;
    head.appendChild(th);
  });
  table.createTHead().appendChild(head);
  bodies[dataset] = table.createTBody();
  box.appendChild(table);
  grid.appendChild(box);
  return bodies[dataset];
}
function showSlice(row, item, k) {
  const c = item.slices[k];
  ["image", "heatmap", "mask", "overlay"].forEach(function (kind) {
    const img = row.querySelector("img[alt='" + kind + "']");
    img.src = c.files[kind];
  });
  row.querySelector("a").href = c.files.overlay;
  const where = item.slices.length > 1 ? "slice " + (k + 1) + " of " + item.slices.length + ": " : "";
  row.querySelector(".slice-score").textContent = where + c.score_text + " (mask px " + c.mask_pixels + ")";
  const name = row.querySelector(".slice-case");
  if (name) { name.textContent = c.case_id; }
}
const cards = cases.map(function (item) {
  const row = document.createElement("tr");
  const first = item.slices[0];
  row.className = "card" + (item.mask_pixels > 0 ? " flag" : "");
  row.dataset.caseId = item.volume_id || first.case_id;
  row.dataset.score = String(item.image_score);
  row.dataset.dataset = item.dataset;
  const name = cell(row, (item.volume_id || first.case_id) + (item.class_name ? " (" + item.class_name + ")" : ""));
  ["image", "heatmap", "mask"].forEach(function (kind) { cell(row, picture(first.files[kind], kind)); });
  const link = document.createElement("a");
  link.href = first.files.overlay;
  link.appendChild(picture(first.files.overlay, "overlay"));
  cell(row, link);
  const score = cell(row, "");
  if (item.volume_id) {
    name.appendChild(document.createElement("br"));
    name.appendChild(document.createTextNode(item.slices.length + " slices, in slice order"));
    const slider = document.createElement("input");
    slider.type = "range";
    slider.className = "slice";
    slider.min = "0";
    slider.max = String(item.slices.length - 1);
    slider.value = "0";
    slider.title = "slice";
    slider.addEventListener("input", function () { showSlice(row, item, parseInt(slider.value, 10)); });
    name.appendChild(slider);
    const current = document.createElement("span");
    current.className = "slice-case";
    name.appendChild(current);
    score.appendChild(document.createTextNode("volume score (max over slices) " + item.score_text));
    score.appendChild(document.createElement("br"));
  }
  const sliceScore = document.createElement("span");
  sliceScore.className = "slice-score";
  score.appendChild(sliceScore);
  cell(row, item.label === null ? "unlabelled" : (LABELS[String(item.label)] || String(item.label)));
  cell(row, item.ground_truth ? "mask: contour in overlay" : "no mask");
  showSlice(row, item, 0);
  section(item.dataset);
  return row;
});
function render() {
  const order = sortBox.value;
  const minimum = parseFloat(slider.value);
  const showAll = minimum <= parseFloat(slider.min) + parseFloat(slider.step) / 2;
  const sorted = cards.slice().sort(function (a, b) {
    if (order === "case") { return a.dataset.caseId < b.dataset.caseId ? -1 : 1; }
    const d = parseFloat(a.dataset.score) - parseFloat(b.dataset.score);
    return order === "score-asc" ? d : -d;
  });
  let shown = 0;
  sorted.forEach(function (card) {
    const visible = showAll || parseFloat(card.dataset.score) >= minimum;
    card.hidden = !visible;
    if (visible) { shown += 1; }
    bodies[card.dataset.dataset].appendChild(card);
  });
  document.getElementById("min-value").textContent = showAll ? "all" : minimum.toFixed(4);
  document.getElementById("shown").textContent = shown + " of " + cards.length + " cases shown";
}
sortBox.addEventListener("change", render);
slider.addEventListener("input", render);
render();
</script></body></html>
"""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_gallery(
    path: Path, cases: Sequence[dict[str, Any]], threshold: Threshold, *, model: Mapping[str, Any] | None = None
) -> None:
    """Write the offline review gallery.

    Cases are grouped by dataset in tables with column labels; the score slider starts below the lowest
    score, so every case shows on load. With ``model["random_weights"]`` a RANDOM WEIGHTS banner heads the page.

    Args:
        path: the ``index.html`` to write (the case PNGs are in the same folder).
        cases: export entries with ``case_id``, ``image_score``, ``class_name``, ``mask_pixels``, ``files``
            (``image``, ``heatmap_png``, ``mask``, ``overlay``) and optionally ``dataset``, ``label``,
            ``ground_truth`` and ``volume_id`` / ``slice_order`` (cases of one volume become one row).
        threshold: the mask threshold, shown in the header.
        model: ``{"name": ..., "random_weights": ...}`` of the model that made the predictions.
    """
    model = model or {}
    data = gallery_items(cases, threshold)
    scores = [d["image_score"] for d in data] or [0.0]
    lo, hi = min(scores), max(scores)
    step = (hi - lo) / 1000 if hi > lo else max(abs(lo), 1.0) / 1000
    random_weights = bool(model.get("random_weights"))
    banner = (
        '<div class="random" id="random-weights">RANDOM WEIGHTS - NOT A RESULT: weights of the model (frozen '
        "backbone / text tower, or its trainable adapters) are random, not pretrained or trained: these maps and "
        "scores mean nothing about the images.</div>"
        if random_weights
        else ""
    )
    page = (
        _PAGE.replace("__TITLE_RANDOM__", " - RANDOM WEIGHTS" if random_weights else "")
        .replace("__RANDOM__", banner)
        .replace("__MODEL__", _escape(str(model.get("name") or "unknown")))
        .replace("__VERSION__", medad.__version__)
        .replace("__THRESHOLD__", _escape(threshold.describe()))
        .replace("__PRED__", PRED_CONTOUR)
        .replace("__GT__", GT_CONTOUR)
        .replace("__CMAP__", HEATMAP_CMAP)
        .replace("__MIN__", repr(lo - step))
        .replace("__MAX__", repr(hi + step))
        .replace("__STEP__", repr(step))
        .replace("__DATA__", json.dumps(data).replace("<", "\\u003c"))
    )
    write_text_atomic(path, page)


def _slice(case: Mapping[str, Any], threshold: Threshold) -> dict[str, Any]:
    """One image of a gallery row: its case id, score and PNGs."""
    score = float(case["image_score"])
    files = case["files"]
    return {
        "case_id": case["case_id"],
        "image_score": score,
        "score_text": score_text(score, threshold.value),
        "mask_pixels": int(case["mask_pixels"]),
        "files": {"image": files["image"], "heatmap": files["heatmap_png"], "mask": files["mask"],
                  "overlay": files["overlay"]},
    }  # fmt: skip


def _volume_label(labels: list[Any]) -> int | None:
    """Abnormal when any slice is, normal when every slice is labelled normal, else unknown (as ``medad eval``)."""
    if any(v == 1 for v in labels):
        return 1
    return 0 if labels and all(v == 0 for v in labels) else None


def gallery_items(cases: Sequence[Mapping[str, Any]], threshold: Threshold) -> list[dict[str, Any]]:
    """The gallery's rows: each plain case on its own, each volume's cases together in ``slice_order``, scored by
    its highest slice score; rows in the order of their first case."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for n, case in enumerate(cases):
        groups.setdefault(str(case.get("volume_id") or f"#{n}"), []).append(case)
    items = []
    for key, members in groups.items():
        volume = not key.startswith("#")
        if volume:
            members = sorted(members, key=lambda c: int(c.get("slice_order") or 0))
        score = max(float(c["image_score"]) for c in members)
        items.append(
            {
                "volume_id": key if volume else "",
                "dataset": str(members[0].get("dataset") or ""),
                "class_name": members[0]["class_name"],
                "image_score": score,
                "score_text": score_text(score, threshold.value),
                "label": _volume_label([c.get("label") for c in members]),
                "ground_truth": any(bool(c.get("ground_truth")) for c in members),
                "mask_pixels": sum(int(c["mask_pixels"]) for c in members),
                "slices": [_slice(c, threshold) for c in members],
            }
        )
    return items
