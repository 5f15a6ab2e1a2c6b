"""PNG artefacts at native size, NIfTI round trips with the source affine, and the gallery in real Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medad.export import export_predictions, fixed_threshold
from tests.export.conftest import blob, manifest_row

SCREENSHOT = Path("/tmp/medad_gallery.png")


@pytest.fixture
def image_export(tmp_path: Path, make_run, png_source) -> Path:
    """Export five plain images of odd sizes with distinct scores."""
    shapes = [(37, 53), (64, 48), (20, 90), (33, 33), (50, 70)]
    rows = [manifest_row(png_source(f"img{i}.png", s), "image", label=i % 2) for i, s in enumerate(shapes)]
    maps = [blob(s, (s[0] / 2, s[1] / 3), 6) * (0.5 + i / 8) for i, s in enumerate(shapes)]
    preds, manifest = make_run(rows, maps, scores=[0.3, 0.9, 0.1, 0.7, 0.5])
    return export_predictions(
        preds, manifest, tmp_path / "export", formats=("png", "nifti"), threshold=fixed_threshold(0.6)
    )


def test_png_outputs_at_original_size(image_export: Path) -> None:
    report = json.loads((image_export / "export.json").read_text())
    assert len(report["cases"]) == 5
    for case in report["cases"]:
        h, w = case["size"]
        mask = np.asarray(Image.open(image_export / case["files"]["mask"]))
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        heat_png = Image.open(image_export / case["files"]["heatmap_png"])
        assert heat_png.mode.startswith("I")
        heat = np.load(image_export / case["files"]["heatmap_npy"])
        lo, hi = case["heatmap_png_range"]
        decoded = lo + np.asarray(heat_png, dtype=np.float64) / 65535 * (hi - lo)
        np.testing.assert_allclose(decoded, heat, atol=(hi - lo) / 65535)
        np.testing.assert_array_equal(mask == 255, heat >= 0.6)
        assert case["mask_pixels"] == int((heat >= 0.6).sum())
        overlay = Image.open(image_export / case["files"]["overlay"])
        assert "RESEARCH USE ONLY" in overlay.text["Disclaimer"]
        assert any("nifti" in note for note in case["notes"])
    assert report["threshold"]["rule"] == "fixed" and report["medad_version"]


def test_nifti_round_trip_keeps_source_affine(tmp_path: Path, make_run) -> None:
    affine = np.array([[0.0, -0.8, 0, 30], [1.2, 0, 0, -20], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    volume = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    rows, maps = [], []
    for axis in (1,):
        for k in range(volume.shape[axis]):
            rows.append(manifest_row(path, "nifti", frame=k, axis=axis))
            maps.append(blob((12, 6), (k + 1, 3), 2.0))
    preds, manifest = make_run(rows, maps)
    out = export_predictions(
        preds, manifest, tmp_path / "export", formats=("nifti", "dicom-seg"), threshold=fixed_threshold(0.5)
    )
    case = json.loads((out / "export.json").read_text())["cases"][0]
    mask = nib.load(out / case["volume_files"]["nifti_mask"])
    heat = nib.load(out / case["volume_files"]["nifti_heatmap"])
    np.testing.assert_allclose(mask.affine, affine)
    np.testing.assert_allclose(heat.affine, affine)
    assert mask.shape == volume.shape and mask.get_data_dtype() == np.uint8
    expected = np.stack(maps, axis=1)
    np.testing.assert_allclose(heat.get_fdata(), expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (expected >= 0.5).astype(np.uint8))
    assert any("not DICOM" in note for note in case["notes"])
    assert not list(out.glob("*.dcm"))


class _Chromium:
    """Headless Chromium driven over the DevTools protocol (websocket-client)."""

    def __init__(self, binary: str) -> None:
        import websocket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.profile = tempfile.mkdtemp(prefix="medad-chromium-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={self.profile}",
                f"--remote-debugging-port={port}",
                "--window-size=1400,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
                page = next(p for p in pages if p["type"] == "page")
                break
            except (OSError, StopIteration):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=20)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            assert time.time() < deadline, f"no {method}"
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_gallery_in_headless_chromium(image_export: Path) -> None:
    browser = _Chromium(shutil.which("chromium") or "chromium")
    try:
        for domain in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            browser.call(domain)
        browser.call("Page.navigate", url=(image_export / "index.html").as_uri())
        browser.wait_for("Page.loadEventFired")
        time.sleep(0.3)
        order = (
            "Array.from(document.querySelectorAll('.card')).filter(c => !c.hidden)"
            ".map(c => Math.round(100 * c.dataset.score) / 100)"
        )
        assert browser.evaluate(order) == [0.9, 0.7, 0.5, 0.3, 0.1]
        loaded = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        assert browser.evaluate(loaded) is True
        browser.evaluate(
            "const s = document.getElementById('sort'); s.value = 'score-asc';s.dispatchEvent(new Event('change')); 0"
        )
        assert browser.evaluate(order) == [0.1, 0.3, 0.5, 0.7, 0.9]
        browser.evaluate(
            "const r = document.getElementById('min-score'); r.value = '0.45';r.dispatchEvent(new Event('input')); 0"
        )
        assert browser.evaluate(order) == [0.5, 0.7, 0.9]
        assert browser.evaluate("document.getElementById('shown').textContent") == "3 of 5 cases shown"
        browser.evaluate(
            "const q = document.getElementById('min-score'); q.value = q.min;q.dispatchEvent(new Event('input')); 0"
        )
        shot = browser.call("Page.captureScreenshot", format="png")
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        errors = [
            e
            for e in browser.events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]
        assert errors == []
        urls = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
        assert urls and all(u.startswith("file://") for u in urls)
    finally:
        browser.close()
