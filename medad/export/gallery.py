"""An offline review gallery: one ``index.html`` beside the exported PNGs, opened straight from disk.

No network and no external scripts: CSS and JavaScript are inline, case data is embedded as JSON, and images
are relative links to the PNGs in the same folder. Cards can be sorted by score and filtered with a score
slider. Only pseudonymous case ids appear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import medad
from medad.export.thresholds import Threshold
from medad.utils.io import write_text_atomic

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>medad review gallery - RESEARCH USE ONLY</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{position:sticky;top:0;background:#222;padding:8px 12px;border-bottom:2px solid #c00;z-index:1}
.ruo{color:#f44;font-weight:bold}
#grid{display:flex;flex-wrap:wrap;gap:10px;padding:12px}
.card{background:#1c1c1c;border:1px solid #333;border-radius:6px;padding:6px;width:430px}
.card.flag{border-color:#0cc}
.card img{width:136px;height:136px;object-fit:contain;background:#000;image-rendering:pixelated}
.card .meta{font-size:12px;margin-top:4px}
label{margin-right:14px;font-size:14px}
</style></head><body>
<header><span class="ruo">RESEARCH USE ONLY - not for diagnostic use.</span>
medad __VERSION__ &middot; mask threshold __THRESHOLD__ &middot; <span id="shown"></span><br>
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
const cards = cases.map(function (c) {
  const card = document.createElement("div");
  card.className = "card" + (c.mask_pixels > 0 ? " flag" : "");
  card.dataset.caseId = c.case_id;
  card.dataset.score = String(c.image_score);
  ["image", "heatmap", "mask"].forEach(function (kind) {
    const img = document.createElement("img");
    img.src = c.files[kind];
    img.alt = kind;
    img.title = kind;
    card.appendChild(img);
  });
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = c.case_id + "  score " + c.image_score.toFixed(4) + "  " + c.class_name +
    "  mask px " + c.mask_pixels;
  const link = document.createElement("a");
  link.href = c.files.overlay;
  link.textContent = " overlay";
  link.style.color = "#0cc";
  meta.appendChild(link);
  card.appendChild(meta);
  return card;
});
function render() {
  const order = sortBox.value;
  const minimum = parseFloat(slider.value);
  const sorted = cards.slice().sort(function (a, b) {
    if (order === "case") { return a.dataset.caseId < b.dataset.caseId ? -1 : 1; }
    const d = parseFloat(a.dataset.score) - parseFloat(b.dataset.score);
    return order === "score-asc" ? d : -d;
  });
  let shown = 0;
  sorted.forEach(function (card) {
    const visible = parseFloat(card.dataset.score) >= minimum;
    card.hidden = !visible;
    if (visible) { shown += 1; }
    grid.appendChild(card);
  });
  document.getElementById("min-value").textContent = minimum.toFixed(4);
  document.getElementById("shown").textContent = shown + " of " + cards.length + " cases shown";
}
sortBox.addEventListener("change", render);
slider.addEventListener("input", render);
render();
</script></body></html>
"""


def write_gallery(path: Path, cases: Sequence[dict[str, Any]], threshold: Threshold) -> None:
    """Write the offline review gallery.

    Args:
        path: the ``index.html`` to write (the case PNGs are in the same folder).
        cases: export entries with ``case_id``, ``image_score``, ``class_name``, ``mask_pixels`` and
            ``files`` (``image``, ``heatmap_png``, ``mask``, ``overlay``).
        threshold: the mask threshold, shown in the header.
    """
    data = [
        {
            "case_id": c["case_id"],
            "image_score": float(c["image_score"]),
            "class_name": c["class_name"],
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
    step = (hi - lo) / 1000 if hi > lo else 1.0
    page = (
        _PAGE.replace("__VERSION__", medad.__version__)
        .replace("__THRESHOLD__", threshold.describe().replace("<", "&lt;"))
        .replace("__MIN__", repr(lo))
        .replace("__MAX__", repr(hi if hi > lo else lo + 1.0))
        .replace("__STEP__", repr(step))
        .replace("__DATA__", json.dumps(data).replace("<", "\\u003c"))
    )
    write_text_atomic(path, page)
