"""An offline review gallery: one ``index.html`` beside the exported PNGs, opened straight from disk.

No network and no external scripts: CSS and JavaScript are inline, case data is embedded as JSON, and images
are relative links to the PNGs in the same folder. Cases are grouped by dataset, in tables with column labels;
rows can be sorted by score and filtered with a score slider that starts below the lowest score. Only
pseudonymous case ids appear.
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
  title.textContent = "dataset " + (dataset || "(unnamed)") + " - " + n + " case" + (n === 1 ? "" : "s");
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
const cards = cases.map(function (c) {
  const row = document.createElement("tr");
  row.className = "card" + (c.mask_pixels > 0 ? " flag" : "");
  row.dataset.caseId = c.case_id;
  row.dataset.score = String(c.image_score);
  row.dataset.dataset = c.dataset;
  cell(row, c.case_id + (c.class_name ? " (" + c.class_name + ")" : ""));
  ["image", "heatmap", "mask"].forEach(function (kind) { cell(row, picture(c.files[kind], kind)); });
  const link = document.createElement("a");
  link.href = c.files.overlay;
  link.appendChild(picture(c.files.overlay, "overlay"));
  cell(row, link);
  cell(row, c.score_text + " (mask px " + c.mask_pixels + ")");
  cell(row, c.label === null ? "unlabelled" : (LABELS[String(c.label)] || String(c.label)));
  cell(row, c.ground_truth ? "mask: contour in overlay" : "no mask");
  section(c.dataset);
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
            (``image``, ``heatmap_png``, ``mask``, ``overlay``) and optionally ``dataset``, ``label`` and
            ``ground_truth``.
        threshold: the mask threshold, shown in the header.
        model: ``{"name": ..., "random_weights": ...}`` of the model that made the predictions.
    """
    model = model or {}
    data = [
        {
            "case_id": c["case_id"],
            "dataset": str(c.get("dataset") or ""),
            "image_score": float(c["image_score"]),
            "score_text": score_text(float(c["image_score"]), threshold.value),
            "class_name": c["class_name"],
            "label": c.get("label"),
            "ground_truth": bool(c.get("ground_truth")),
            "mask_pixels": int(c["mask_pixels"]),
            "files": {
                "image": c["files"]["image"],
                "heatmap": c["files"]["heatmap_png"],
                "mask": c["files"]["mask"],
                "overlay": c["files"]["overlay"],
            },
        }
        for c in cases
    ]
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
