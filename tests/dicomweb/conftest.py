"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the DICOMweb tests.

The session fixture starts Orthanc on a free loopback port with a temporary storage folder and a JSON config
(DICOMweb plugin on, remote access off, HTTP authentication with one test user, DICOM port off), waits until
it answers and stops it afterwards. Tests skip with a clear reason only when the binary or the plugin is absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
PLUGIN_PLACES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")
USER, PASSWORD = "medad-test", "not-a-real-secret-9f2c"


def _plugin() -> str | None:
    for place in PLUGIN_PLACES:
        if Path(place).is_file():
            return place
    found = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")) if Path("/usr/lib/orthanc").is_dir() else []
    return str(found[0]) if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_tcp_port() -> Iterator[int]:
    """A loopback port that accepts every TCP connection and never sends a byte (a hung server or PACS)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # kept open, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server the tests started: SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_orthanc(
    root: Path, name: str, settings: Mapping[str, Any], user: tuple[str, str] = (USER, PASSWORD), ready: str = "/system"
) -> Iterator[int]:
    """Orthanc on a free loopback HTTP port, storing in ``root/db`` (config and log beside it), HTTP basic auth for
    ``user``, stable after 1 s, plus ``settings``; yields the HTTP port once ``ready`` answers, stops on leaving."""
    port = free_port()
    config = {
        "Name": name,
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user[0]: user[1]},
        "StableAge": 1,
        **settings,
    }
    (root / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = root / "orthanc.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(ORTHANC), str(root / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"Orthanc exited with code {proc.returncode}; see {log}")
                try:
                    url = f"http://127.0.0.1:{port}{ready}"
                    if requests.get(url, auth=user, timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not answer within 60 s; see {log}")
                time.sleep(0.2)
            yield port
        finally:
            stop_process(proc)


@dataclasses.dataclass
class Orthanc:
    """A running test Orthanc: its REST root, DICOMweb root and test credentials."""

    url: str
    auth: tuple[str, str]

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        """Call Orthanc's REST API and return the decoded JSON (or bytes for files)."""
        response = requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("Content-Type", "") else response.content

    def upload(self, ds: pydicom.Dataset, tmp: Path) -> None:
        """Store one dataset through the REST API (as a file, like a modality would)."""
        path = tmp / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        self.rest("/instances", "POST", data=path.read_bytes())

    def study_id(self, study_uid: str) -> str:
        """Orthanc's own id of a study, by StudyInstanceUID."""
        found = self.rest("/tools/lookup", "POST", data=study_uid)
        return next(item["ID"] for item in found if item["Type"] == "Study")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Start Orthanc with the DICOMweb plugin on a free loopback port; stop it after the session."""
    plugin = _plugin()
    if ORTHANC is None or plugin is None:
        pytest.skip("Orthanc or its DICOMweb plugin is not installed (Debian packages orthanc, orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    settings = {
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "HttpTimeout": 30,
    }
    with running_orthanc(root, "medad-test", settings, ready="/dicom-web/studies") as port:
        yield Orthanc(f"http://127.0.0.1:{port}", (USER, PASSWORD))


@pytest.fixture
def credentials(orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch) -> Orthanc:
    """The test user's credentials in medad's environment variables, and quick retries."""
    for name in ("MEDAD_DICOMWEB_TOKEN", "MEDAD_DICOMWEB_TOKEN_FILE", "MEDAD_DICOMWEB_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDAD_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "1")
    return orthanc


def ct_mr_study(orthanc: Orthanc, tmp: Path) -> str:
    """Upload copies of pydicom's real CT and MR test files as one new study; return its StudyInstanceUID."""
    study = generate_uid()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "MEDADTEST01", "Test^Patient"
        orthanc.upload(ds, tmp)
    return study
