"""The review gallery shows a DICOM series as one case (its volume score) whose slices a slider browses in slice
order along the normal, whatever the file names and whatever the formats exported (a PNG-only export groups the
volumes too, without planning or writing a volume object); plain images stay one row each."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medad.data.dicom import make_dicom
from medad.export import export_notices, export_predictions, export_summary, fixed_threshold
from medad.export.gallery import gallery_items
from tests.export.conftest import manifest_row
from tests.export.series_files import enhanced_from, write_series
from tests.export.test_png_nifti_gallery import _Chromium

SLICE_SCORES = [0.2, 0.8, 0.4, 0.3, 0.1]  # by position along the normal: the volume score is slice 1's 0.8


def _export_series(tmp_path: Path, make_run, formats: Sequence[str]) -> tuple[Path, list[str]]:
    """A 5-slice series (shuffled file names) exported in ``formats``; returns the export and its case ids in
    slice order."""
    paths = write_series(tmp_path / "series", n=5, seed=3)
    manifest = make_dicom(tmp_path / "series")
    maps, scores = [], []
    for _, row in manifest.iterrows():
        k = paths.index(Path(row["image_path"]))
        ds = pydicom.dcmread(row["image_path"], stop_before_pixels=True)
        maps.append(np.full((int(ds.Rows), int(ds.Columns)), SLICE_SCORES[k], np.float32))
        scores.append(SLICE_SCORES[k])
    preds, manifest = make_run(manifest.to_dict("records"), maps, scores=scores)
    out = export_predictions(preds, manifest, tmp_path / "export", formats=formats, threshold=fixed_threshold(0.5))
    cases = json.loads((out / "export.json").read_text())["cases"]
    by_index = {c["index"]: c["case_id"] for c in cases}
    order = [by_index[i] for i in sorted(by_index, key=lambda i: paths.index(Path(manifest.at[i, "image_path"])))]
    return out, order


@pytest.fixture
def series_gallery(tmp_path: Path, make_run) -> tuple[Path, list[str]]:
    """The series exported as PNGs only (the default format): its volume is grouped all the same."""
    return _export_series(tmp_path, make_run, ("png",))


@pytest.mark.parametrize("formats", [("png",), ("png", "nifti")])
def test_a_series_is_one_gallery_row_with_its_slices_in_slice_order(tmp_path: Path, make_run, formats) -> None:
    out, order = _export_series(tmp_path, make_run, formats)
    report = json.loads((out / "export.json").read_text())
    cases = report["cases"]
    assert [c["slice_order"] for c in sorted(cases, key=lambda c: order.index(c["case_id"]))] == [0, 1, 2, 3, 4]
    items = gallery_items(cases, fixed_threshold(0.5))
    assert len(items) == 1
    item = items[0]
    assert item["volume_id"].startswith("volume-") and item["image_score"] == pytest.approx(0.8)
    assert {c["volume_id"] for c in cases} == {item["volume_id"]}
    assert [s["case_id"] for s in item["slices"]] == order  # along the normal, not by file name
    assert [s["image_score"] for s in item["slices"]] == pytest.approx(SLICE_SCORES)
    (volume,) = report["volumes"]
    assert volume["volume_id"] == item["volume_id"] and volume["cases"] == order
    assert volume["kind"] == "dicom-series" and volume["slices"] == volume["files"] == 5


def test_a_png_only_export_groups_the_series_but_writes_and_claims_no_volume_object(series_gallery) -> None:
    out, order = series_gallery
    report = json.loads((out / "export.json").read_text())
    (volume,) = report["volumes"]
    assert "export" not in volume and "outputs" not in volume  # no series object was written
    assert not list(out.glob("*.nii.gz")) and not list(out.glob("*.dcm"))
    assert all("volume_files" not in c and "volume_case" not in c for c in report["cases"])
    assert sorted(p.name for p in out.glob("*_overlay.png")) == sorted(f"{c}_overlay.png" for c in order)


def test_a_png_only_export_of_a_gapped_series_lists_its_problem_without_a_fallback_warning(
    tmp_path: Path, make_run
) -> None:
    write_series(tmp_path / "series", n=5, missing=(2,), seed=4)
    manifest = make_dicom(tmp_path / "series")
    preds, manifest = make_run(manifest.to_dict("records"), [np.full((12, 10), 0.3, np.float32)] * len(manifest))
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    (record,) = json.loads((out / "export.json").read_text())["volumes"]
    assert record["problems"] and len(record["cases"]) == 4 and "export" not in record
    assert export_notices(out) == ([], None)  # nothing was exported per file instead of as one object
    assert "series" not in export_summary(out)[0]


def test_a_png_only_export_of_a_nifti_volume_is_one_row_in_slice_order(tmp_path: Path, make_run) -> None:
    path = tmp_path / "vol.nii.gz"
    volume = np.random.default_rng(1).random((12, 10, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1.0])), path)
    frames = [2, 0, 3, 1]  # manifest rows not in slice order
    rows = [manifest_row(path, "nifti", frame=k, axis=2) for k in frames]
    maps = [np.full((12, 10), 0.1 * (k + 1), np.float32) for k in frames]
    preds, manifest = make_run(rows, maps)
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    report = json.loads((out / "export.json").read_text())
    assert [c["slice_order"] for c in report["cases"]] == frames
    (item,) = gallery_items(report["cases"], fixed_threshold(0.5))
    by_frame = {c["frame"]: c["case_id"] for c in report["cases"]}
    assert [s["case_id"] for s in item["slices"]] == [by_frame[k] for k in range(4)]
    (record,) = report["volumes"]
    assert record["kind"] == "nifti" and record["volume_id"] == item["volume_id"] and "export" not in record
    assert not list(out.glob("*.nii.gz"))


def test_a_png_only_export_of_a_multiframe_object_is_one_row_along_the_normal(tmp_path: Path, make_run) -> None:
    paths = write_series(tmp_path / "s", n=4, seed=5)
    (tmp_path / "enh").mkdir()
    enhanced_from(paths[::-1], tmp_path / "enh" / "enhanced.dcm")  # frame f is slice 3 - f along the normal
    manifest = make_dicom(tmp_path / "enh")
    maps = [np.full((12, 10), 0.1 * (int(f) + 1), np.float32) for f in manifest["frame"]]
    preds, manifest = make_run(manifest.to_dict("records"), maps)
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    report = json.loads((out / "export.json").read_text())
    assert {c["frame"]: c["slice_order"] for c in report["cases"]} == {0: 3, 1: 2, 2: 1, 3: 0}
    (item,) = gallery_items(report["cases"], fixed_threshold(0.5))
    assert [s["image_score"] for s in item["slices"]] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    (record,) = report["volumes"]
    assert record["kind"] == "dicom-multiframe" and "export" not in record and not list(out.glob("*.nii.gz"))


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
