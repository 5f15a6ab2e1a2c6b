"""The review gallery shows a DICOM series as one case (its volume score) whose slices a slider browses in slice
order along the normal, whatever the file names; plain images stay one row each."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medad.data.dicom import make_dicom
from medad.export import export_predictions, fixed_threshold
from medad.export.gallery import gallery_items
from tests.export.series_files import write_series
from tests.export.test_png_nifti_gallery import _Chromium

SLICE_SCORES = [0.2, 0.8, 0.4, 0.3, 0.1]  # by position along the normal: the volume score is slice 1's 0.8


@pytest.fixture
def series_gallery(tmp_path: Path, make_run) -> tuple[Path, list[str]]:
    """A 5-slice series (shuffled file names) exported as PNGs and NIfTI (the volume grouping of an export runs
    with a volume format); returns the export and its case ids in slice order."""
    paths = write_series(tmp_path / "series", n=5, seed=3)
    manifest = make_dicom(tmp_path / "series")
    maps, scores = [], []
    for _, row in manifest.iterrows():
        k = paths.index(Path(row["image_path"]))
        ds = pydicom.dcmread(row["image_path"], stop_before_pixels=True)
        maps.append(np.full((int(ds.Rows), int(ds.Columns)), SLICE_SCORES[k], np.float32))
        scores.append(SLICE_SCORES[k])
    preds, manifest = make_run(manifest.to_dict("records"), maps, scores=scores)
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png", "nifti"),
                              threshold=fixed_threshold(0.5))  # fmt: skip
    cases = json.loads((out / "export.json").read_text())["cases"]
    by_index = {c["index"]: c["case_id"] for c in cases}
    order = [by_index[i] for i in sorted(by_index, key=lambda i: paths.index(Path(manifest.at[i, "image_path"])))]
    return out, order


def test_a_series_is_one_gallery_row_with_its_slices_in_slice_order(series_gallery) -> None:
    out, order = series_gallery
    cases = json.loads((out / "export.json").read_text())["cases"]
    assert sorted(c["slice_order"] for c in cases) == [0, 1, 2, 3, 4]
    items = gallery_items(cases, fixed_threshold(0.5))
    assert len(items) == 1
    item = items[0]
    assert item["volume_id"].startswith("volume-") and item["image_score"] == pytest.approx(0.8)
    assert [s["case_id"] for s in item["slices"]] == order  # along the normal, not by file name
    assert [s["image_score"] for s in item["slices"]] == pytest.approx(SLICE_SCORES)


def test_plain_cases_stay_one_row_each() -> None:
    files = {"image": "a.png", "heatmap_png": "h.png", "mask": "m.png", "overlay": "o.png"}
    cases = [{"case_id": f"c{i}", "image_score": 0.1 * i, "class_name": "x", "mask_pixels": i, "label": i % 2,
              "files": files} for i in range(3)]  # fmt: skip
    items = gallery_items(cases, fixed_threshold(0.5))
    assert [i["slices"][0]["case_id"] for i in items] == ["c0", "c1", "c2"]
    assert [i["label"] for i in items] == [0, 1, 0] and all(i["volume_id"] == "" for i in items)


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_the_slice_slider_browses_the_series_in_headless_chromium(series_gallery) -> None:
    out, order = series_gallery
    browser = _Chromium(shutil.which("chromium") or "chromium")
    try:
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            browser.call(domain)
        browser.call("Page.navigate", url=(out / "index.html").as_uri())
        browser.wait_for("Page.loadEventFired")
        time.sleep(0.3)
        assert browser.evaluate("document.querySelectorAll('.card').length") == 1
        assert browser.evaluate("document.getElementById('shown').textContent") == "1 of 1 cases shown"
        shown = "document.querySelector('.card img[alt=image]').getAttribute('src')"
        seen = []
        for k in range(5):
            browser.evaluate(
                f"const s{k} = document.querySelector('input.slice'); s{k}.value = '{k}';"
                f"s{k}.dispatchEvent(new Event('input')); 0"
            )
            seen.append(browser.evaluate(shown))
            text = browser.evaluate("document.querySelector('.slice-score').textContent")
            assert str(text).startswith(f"slice {k + 1} of 5")
        assert [str(s).split("_image")[0] for s in seen] == order
        loaded = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        deadline = time.time() + 30  # the last slice's PNGs load after the slider moved (slow on a loaded machine)
        while browser.evaluate(loaded) is not True and time.time() < deadline:
            time.sleep(0.1)
        assert browser.evaluate(loaded) is True
        errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
        assert errors == []
    finally:
        browser.close()
