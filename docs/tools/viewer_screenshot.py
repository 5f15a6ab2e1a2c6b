"""Screenshot of a medad SEG in the OHIF viewer, served locally against Orthanc's DICOMweb (docs/img/viewer_seg.png).

What it does, end to end, all on loopback:

1. writes a synthetic CT-like series (pydicom; an ellipse "body" with soft-tissue texture and a bright round
   "lesion" on a few middle slices; a made-up patient),
2. starts Orthanc with its DICOMweb plugin (temporary storage, HTTP basic auth with a random password) and
   uploads the series,
3. scores the study over DICOMweb with ``medad score URL --export dicom-seg --to URL`` (the SEG series goes
   back into the same study),
4. serves OHIF's prebuilt ``dist/`` (npm package ``@ohif/app``, fetched once with ``npm pack`` into a cache
   folder) and proxies ``/dicom-web`` to Orthanc from the same origin (no CORS; the proxy adds the credentials),
5. opens the SEG in headless Chromium (DevTools protocol over ``websocket-client``), checks that the segment's
   colour is in the viewport on the middle lesion slice and absent two slices below the lesion, and writes the
   screenshot of the lesion slice.

The SEG is a real ``medad score`` result of the random-weights tiny preset of the transductive ``dinov3_mutual``
baseline: it tests the plumbing (one SEG per series, frames on the right slices, seen by a viewer we did not
write), not the method (docs/exports.md, "Seen in a viewer").

Run from the repository root: ``python docs/tools/viewer_screenshot.py [--out docs/img/viewer_seg.png]``.
Needs Orthanc + orthanc-dicomweb, npm (once, for the viewer), chromium and the medad environment.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.12.10"
SLICES, SIZE, LESION_SLICES = 24, 192, (10, 11, 12, 13, 14)
LESION_CENTRE, LESION_RADIUS = (80, 118), 18.0  # (row, column) in pixels; radius on the middle lesion slice


def ct_slices(seed: int = 0) -> list[np.ndarray]:
    """Hounsfield-like slices: air outside, a soft-tissue ellipse with texture, a bright ball on LESION_SLICES."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    body = ((rows - SIZE / 2) / (SIZE * 0.38)) ** 2 + ((cols - SIZE / 2) / (SIZE * 0.45)) ** 2 <= 1
    spine = (rows - SIZE * 0.72) ** 2 + (cols - SIZE / 2) ** 2 <= (SIZE * 0.06) ** 2
    middle = LESION_SLICES[len(LESION_SLICES) // 2]
    out = []
    for k in range(SLICES):
        hu = np.full((SIZE, SIZE), -1000.0, dtype=np.float32)
        hu[body] = 40.0 + rng.normal(0.0, 12.0, int(body.sum()))
        hu[spine] = 700.0 + rng.normal(0.0, 30.0, int(spine.sum()))
        if k in LESION_SLICES:
            radius = LESION_RADIUS * np.sqrt(max(0.0, 1.0 - ((k - middle) / 3.0) ** 2))
            ball = (rows - LESION_CENTRE[0]) ** 2 + (cols - LESION_CENTRE[1]) ** 2 <= radius**2
            hu[ball] = 260.0 + rng.normal(0.0, 12.0, int(ball.sum()))
        out.append(hu)
    return out


def write_series(folder: Path) -> str:
    """Write the synthetic series as single-frame CT files (shuffled names); return its StudyInstanceUID."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for k, hu in enumerate(ct_slices()):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "Phantom^Viewer", "PHANTOM01", "O", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "synthetic"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.StudyDescription, ds.SeriesDescription = "medad viewer phantom", "synthetic CT, bright lesion"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition, ds.PositionReferenceIndicator = "HFS", ""
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-SIZE * 0.4, -SIZE * 0.4, -50.0 + 2.5 * k]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.5
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.KVP = 120
        ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16).tobytes()
        ds.save_as(folder / f"{secrets.token_hex(4)}.dcm", enforce_file_format=True)
    return study


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll ``ready()`` every 0.2 s until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


@contextmanager
def orthanc(root: Path) -> Iterator[tuple[str, tuple[str, str]]]:
    """Run Orthanc + DICOMweb on a loopback port (basic auth, random password); yield (REST root, credentials)."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    plugins = sorted(Path("/usr/share/orthanc/plugins").glob("libOrthancDicomWeb.so*")) + sorted(
        Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")
    )
    if not Path(binary).is_file() or not plugins:
        raise SystemExit("error: Orthanc or its DICOMweb plugin is missing: apt-get install orthanc orthanc-dicomweb")
    auth, port = ("viewer", secrets.token_hex(12)), free_port()
    config = {
        "Name": "medad-viewer", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "DicomPort": free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {auth[0]: auth[1]}, "Plugins": [str(plugins[0])],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}, "StableAge": 1,
    }  # fmt: skip
    (root / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    with (root / "orthanc.log").open("w") as log:
        proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _answers(f"{url}/dicom-web/studies", auth), "Orthanc answering")
            yield url, auth
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _answers(url: str, auth: tuple[str, str]) -> bool:
    try:
        return requests.get(url, auth=auth, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def score_study(url: str, auth: tuple[str, str], study: str, out: Path, threshold: str) -> None:
    """``medad score`` the study over DICOMweb and store its SEG back into it (one SEG series for the series)."""
    env = dict(os.environ, MEDAD_DICOMWEB_USER=auth[0], MEDAD_DICOMWEB_PASSWORD=auth[1], HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))  # this medad
    command = [
        sys.executable, "-m", "medad.cli", "score", f"{url}/dicom-web/studies/{study}", "--model",
        "dinov3_mutual_tiny", "--device", "cpu", "--out", str(out), "--export", "dicom-seg",
        "--threshold", threshold, "--to", f"{url}/dicom-web",
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True)


def seg_series(url: str, auth: tuple[str, str], study: str) -> str:
    """The one binary SEG series medad stored in the study (its fractional SEG is the other SEG series)."""
    series = requests.get(f"{url}/dicom-web/studies/{study}/series", auth=auth, timeout=30).json()
    described = {s["0020000E"]["Value"][0]: s.get("0008103E", {}).get("Value", [""])[0] for s in series}
    modality = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in series}
    binary = [uid for uid, text in described.items() if modality[uid] == "SEG" and text.endswith("binary SEG")]
    if len(binary) != 1:
        raise RuntimeError(f"expected one binary SEG series in the study, found {len(binary)}: {described}")
    return binary[0]


def ohif_dist(cache: Path, version: str = OHIF_VERSION) -> Path:
    """OHIF's prebuilt viewer (``dist/`` of the npm package ``@ohif/app``), fetched once with ``npm pack``."""
    dist = cache / f"ohif-app-{version}" / "package" / "dist"
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("error: npm is needed once to fetch @ohif/app: install node + npm, or pass --ohif-dist DIR")
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        subprocess.run([npm, "pack", f"@ohif/app@{version}", "--pack-destination", scratch], check=True)
        with tarfile.open(next(Path(scratch).glob("*.tgz"))) as tar:
            tar.extractall(Path(scratch) / "x", filter="data")
        (Path(scratch) / "x").rename(dist.parent.parent)
    return dist


def app_config() -> bytes:
    """OHIF's app-config.js: one DICOMweb source at this origin's /dicom-web, SEGs hydrated without a prompt."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (loopback)", "name": "orthanc", "wadoUriRoot": "/dicom-web",
            "qidoRoot": "/dicom-web", "wadoRoot": "/dicom-web", "qidoSupportsIncludeField": False,
            "imageRendering": "wadors", "thumbnailRendering": "wadors", "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False, "supportsWildcard": True, "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }  # fmt: skip
    config = {
        "routerBasename": "/", "extensions": [], "modes": [], "showStudyList": True, "disableConfirmationPrompts": True,
        "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": False, "showLoadingIndicator": True,
        "defaultDataSourceName": "orthanc", "dataSources": [source], "investigationalUseDialog": {"option": "never"},
    }  # fmt: skip
    return f"window.config = {json.dumps(config)};\n".encode()


def handler(dist: Path, orthanc_url: str, auth: tuple[str, str]) -> type[http.server.BaseHTTPRequestHandler]:
    """Request handler: OHIF's files (any unknown path is the single-page app), /dicom-web proxied to Orthanc."""
    token = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(dist), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the proxied URLs hold study UIDs

        def end_headers(self) -> None:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            super().end_headers()

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith("/dicom-web/"):
                return self._proxy()
            if path == "/app-config.js":
                return self._send(app_config(), "application/javascript")
            if not (dist / path.lstrip("/")).is_file():
                self.path = "/index.html"
            return super().do_GET()

        def _proxy(self) -> None:
            headers = {"Authorization": token, "Accept": self.headers.get("Accept", "*/*")}
            answer = requests.get(orthanc_url + self.path, headers=headers, timeout=60)
            kind = answer.headers.get("Content-Type", "application/octet-stream")
            self._send(answer.content, kind, answer.status_code)

        def _send(self, body: bytes, kind: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def viewer_server(dist: Path, orthanc_url: str, auth: tuple[str, str]) -> Iterator[str]:
    """Serve OHIF + the /dicom-web proxy on a loopback port in a thread; yield its root URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler(dist, orthanc_url, auth))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Chromium:
    """Headless Chromium driven over the DevTools protocol (``websocket-client``): navigate, evaluate, screenshot."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 860) -> None:
        import websocket

        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if binary is None:
            raise SystemExit("error: chromium is missing: apt-get install chromium")
        port = free_port()
        flags = [
            "--headless=new", f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "--no-first-run",
            f"--window-size={width},{height}", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
            "--ignore-gpu-blocklist", "--hide-scrollbars", "--mute-audio",
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.proc = subprocess.Popen([binary, *flags, "about:blank"], **quiet)  # type: ignore[call-overload]
        wait_until(lambda: self._pages(port), "Chromium's DevTools answering")
        page = self._pages(port)[0]["webSocketDebuggerUrl"]
        self.ws = websocket.create_connection(page, timeout=120, suppress_origin=True)
        self._id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def _pages(port: int) -> list[dict[str, str]]:
        try:
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
        except requests.ConnectionError:
            return []
        return [t for t in targets if t.get("type") == "page"]

    def call(self, method: str, **params: object) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> None:
        """Write the page as a PNG."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(str(data)))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


# OHIF's viewport overlay "I:<InstanceNumber> (<position>/<images>)" as three numbers, or null before it shows
OVERLAY_TEXT = (
    "(() => { const m = document.body.innerText.match(/I:(\\d+) \\((\\d+)\\/(\\d+)\\)/);"
    " return m ? m.slice(1).map(Number) : null; })()"
)
# dismiss OHIF's first-visit tour; true once it was there
SKIP_TOUR = (
    "(() => { const b = [...document.querySelectorAll('button')].find(e => e.innerText.trim() === 'Skip all');"
    " if (b) b.click(); return !!b; })()"
)


def show_slice(browser: Chromium, instance: int) -> None:
    """Scroll OHIF's viewport (mouse wheel over it) until its overlay reads ``I:<instance>``."""
    box = browser.evaluate(
        "(() => { const r = document.querySelector('.viewport-element').getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    x, y = box
    step = 120
    for _ in range(3 * SLICES):
        shown, position, total = browser.evaluate(OVERLAY_TEXT)
        if shown == instance:
            return
        step = -120 if position == total else 120 if position == 1 else step  # turn round at an end of the stack
        browser.call("Input.dispatchMouseEvent", type="mouseWheel", x=x, y=y, deltaX=0, deltaY=step)
        time.sleep(0.5)
    raise RuntimeError(f"OHIF never showed instance {instance}")


VIEWPORT_BOX = (
    "(() => { const r = document.querySelector('.viewport-element').getBoundingClientRect();"
    " return [r.x, r.y, r.width, r.height].map(Math.round); })()"
)


def overlay_pixels(png: Path, box: list[int]) -> int:
    """How many pixels inside the viewport ``box`` (x, y, width, height; 30 px margin left out for the overlay
    text and border) have the SEG's cyan (medad's predicted-mask colour, #00FFFF, drawn as the segment outline)."""
    from PIL import Image

    x, y, width, height = box
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)[y + 30 : y + height - 30, x + 30 : x + width - 30]
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((red < 100) & (green > 180) & (blue > 180) & (abs(green - blue) < 30)).sum())


def capture(root: str, study: str, seg: str, out: Path, profile: Path) -> None:
    """Open the SEG series in OHIF (it loads its source series under it) and check that the overlay is on the
    lesion's slices only: a slice two below the lesion must show none; then write the screenshot of the middle
    lesion slice with the segmentation panel open."""
    browser = Chromium(profile, 1600, 900)
    try:
        browser.call("Page.navigate", url=f"{root}/viewer?StudyInstanceUIDs={study}&initialSeriesInstanceUID={seg}")
        wait_until(lambda: browser.evaluate(OVERLAY_TEXT), "OHIF showing the series", 240)
        wait_until(lambda: browser.evaluate(SKIP_TOUR), "OHIF's welcome tour", 30)
        browser.evaluate("document.querySelector('[data-cy=\"panelSegmentation-btn\"]').click()")
        time.sleep(2)  # the panel opens and the viewport resizes
        box = browser.evaluate(VIEWPORT_BOX)
        for instance, wanted in ((LESION_SLICES[0] - 1, False), (LESION_SLICES[len(LESION_SLICES) // 2] + 1, True)):
            show_slice(browser, instance)
            time.sleep(3)  # the viewport renders the new slice and its labelmap
            browser.screenshot(out)
            if (overlay_pixels(out, box) >= 50) != wanted:
                shown = "shows no" if wanted else "shows a"
                raise RuntimeError(f"{out} {shown} segmentation overlay on instance {instance}; look at it")
    finally:
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/viewer_seg.png"), help="the screenshot (PNG)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "medad-viewer", help="OHIF download")
    parser.add_argument("--threshold", default="fixed:0.2", help="medad's mask threshold (see docs/exports.md)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    dist = ohif_dist(args.cache)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name in ("series", "orthanc", "profile"):
            (work / name).mkdir()
        study = write_series(work / "series")
        with orthanc(work / "orthanc") as (url, auth):
            for path in sorted((work / "series").glob("*.dcm")):
                requests.post(f"{url}/instances", data=path.read_bytes(), auth=auth, timeout=30).raise_for_status()
            score_study(url, auth, study, work / "score", args.threshold)
            seg = seg_series(url, auth, study)
            with viewer_server(dist, url, auth) as root:
                capture(root, study, seg, args.out, work / "profile")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
