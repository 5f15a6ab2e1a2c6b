"""Pictures that show what is there: windowed display of high-bit-depth sources, overlay colours equal to the
colour bar's, distinct predicted / ground-truth contours, the random-weights notice, and a gallery that shows
every case grouped by dataset with column labels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from medad.export import export_predictions, fixed_threshold
from medad.export.png import overlay_caption
from medad.utils.colors import GT_CONTOUR, HEATMAP_CMAP, PRED_CONTOUR
from tests.export.conftest import blob, manifest_row
from tests.timeouts import HANG_S

RANDOM_META = {"model": {"name": "ad_dinov3_tiny", "random_weights": True}, "random_weights": True}
REAL_META = {"model": {"name": "ad_dinov3_vitb16", "random_weights": False}, "random_weights": False}


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def _near(pixels: np.ndarray, colour: np.ndarray, tolerance: int = 3) -> int:
    return int((np.abs(pixels[..., :3].astype(int) - colour).max(axis=-1) <= tolerance).sum())


def test_16bit_png_is_windowed_for_display(tmp_path: Path, make_run) -> None:
    """A 16-bit PNG using 1000..5000 of its range showed all white; now its percentile window spans 0..255."""
    ramp = np.tile(np.linspace(1000, 5000, 80), (60, 1)).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    preds, manifest = make_run([manifest_row(path, "image")], [np.zeros((60, 80), np.float32)])
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    shown = np.asarray(Image.open(next(out.glob("*_image.png"))), dtype=int)
    assert shown.min() == 0 and shown.max() == 255 and 100 < shown.mean() < 155
    assert (np.diff(shown[0]) >= 0).all()  # the ramp stays a ramp
    assert "percentiles" in json.loads((out / "export.json").read_text())["display_window"]


def test_float_nifti_with_an_outlier_is_windowed(tmp_path: Path, make_run) -> None:
    """Min-max scaling turned a float slice with one extreme voxel black; the percentile window keeps it visible."""
    volume = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (30, 1))[:, :, None].repeat(2, axis=2)
    volume[0, 0, :] = 1e6
    path = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    preds, manifest = make_run([manifest_row(path, "nifti", frame=0, axis=2)], [np.zeros((30, 40), np.float32)])
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    shown = np.asarray(Image.open(next(out.glob("*_image.png"))), dtype=int)
    assert shown[1:].mean() > 100 and shown[1:, -1].min() == 255


def test_overlay_heatmap_colours_equal_the_colour_bar_and_contours_differ(tmp_path: Path, make_run) -> None:
    grey = np.full((64, 64), 128, np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    gt = np.zeros((64, 64), np.uint8)
    gt[8:30, 8:30] = 255
    Image.fromarray(gt).save(tmp_path / "grey_mask.png")
    pixel_map = np.full((64, 64), 0.2, np.float32)
    pixel_map[:, 32:] = 0.8
    row = manifest_row(path, "image", label=1, mask_path=str(tmp_path / "grey_mask.png"))
    preds, manifest = make_run([row], [pixel_map])
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    overlay = np.asarray(Image.open(next(out.glob("*_overlay.png"))).convert("RGB"))
    cmap = matplotlib.colormaps[HEATMAP_CMAP]
    low, high = (np.round(np.array(cmap(v)[:3]) * 255) for v in (0.2, 0.8))
    # the map panel is 384x384 px, half of it each value: its colours are the colour bar's, not a blend
    assert _near(overlay, low) > 30000 and _near(overlay, high) > 30000
    assert _near(overlay, _rgb(PRED_CONTOUR), 10) > 300 and _near(overlay, _rgb(GT_CONTOUR), 10) > 300
    assert PRED_CONTOUR != GT_CONTOUR
    case = json.loads((out / "export.json").read_text())["cases"][0]
    assert case["ground_truth"] is True and case["label"] == 1


@pytest.mark.parametrize("meta", [RANDOM_META, REAL_META], ids=["random", "pretrained"])
def test_random_weights_named_in_export_json_gallery_and_overlay(tmp_path: Path, make_run, png_source, meta) -> None:
    rows = [manifest_row(png_source(f"r{i}.png", (24, 24)), "image") for i in range(2)]
    preds, manifest = make_run(rows, [blob((24, 24), (12, 12), 5)] * 2, meta=meta)
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    report = json.loads((out / "export.json").read_text())
    flag = meta["random_weights"]
    assert report["random_weights"] is flag
    assert report["models"] == [{"name": meta["model"]["name"], "random_weights": flag}]
    page = (out / "index.html").read_text()
    assert ("RANDOM WEIGHTS" in page) is flag and meta["model"]["name"] in page
    overlay = Image.open(next(out.glob("*_overlay.png")))
    assert ("RANDOM WEIGHTS" in overlay.text.get("Warning", "")) is flag
    headline, _ = overlay_caption("case-x", 0.5, fixed_threshold(0.5), model="m", random_weights=flag)
    assert ("RANDOM WEIGHTS" in headline) is flag


def _dom(page: Path) -> str:
    done = subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    return done.stdout


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_gallery_shows_every_case_grouped_with_labels(tmp_path: Path, make_run, png_source) -> None:
    """Identical scores (the demo's 36 x 0.8868) left 0 cases shown on load; now all show, in dataset groups."""
    rows = []
    for i in range(6):
        row = manifest_row(png_source(f"g{i}.png", (20, 20)), "image", label=i % 2)
        row["dataset"] = "isic" if i < 4 else "kvasir"
        rows.append(row)
    score = float(np.float32(0.8868))
    preds, manifest = make_run(rows, [blob((20, 20), (10, 10), 4)] * 6, scores=[score] * 6, meta=RANDOM_META)
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    dom = _dom(out / "index.html")
    assert '<span id="shown">6 of 6 cases shown</span>' in dom
    assert len(re.findall(r'<tr class="card[^"]*"[^>]*>', dom)) == 6 and " hidden" not in dom.split("<main")[1]
    assert re.findall(r'<section data-dataset="(\w+)"', dom) == ["isic", "kvasir"]
    headers = re.findall(r"<th>([^<]+)</th>", dom)
    for column in ("image", "predicted mask", "overlay (contours)", "score", "label", "ground truth"):
        assert column in headers
    assert "ad_dinov3_tiny" in dom and 'id="random-weights"' in dom
    assert "<td>normal</td>" in dom and "<td>anomalous</td>" in dom


def test_dicom_without_voi_window_gets_the_percentile_window(tmp_path: Path, dicom_sources, make_run) -> None:
    """A 16-bit CT without a VOI window and one extreme pixel was min-max scaled to near black."""
    ds = pydicom.dcmread(dicom_sources["ct"])
    assert "WindowCenter" not in ds
    pixels = ds.pixel_array.copy()
    pixels[0, 0] = 32000
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "hot.dcm")
    preds, manifest = make_run(
        [manifest_row(tmp_path / "hot.dcm", "dicom", frame=0)], [np.zeros((128, 128), np.float32)]
    )
    out = export_predictions(preds, manifest, tmp_path / "export", formats=("png",), threshold=fixed_threshold(0.5))
    shown = np.asarray(Image.open(next(out.glob("*_image.png"))), dtype=int)
    assert shown.mean() > 60 and np.percentile(shown, 99.6) == 255 and shown.min() == 0
