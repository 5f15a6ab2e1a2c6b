"""Real DIMSE peers on loopback for the DIMSE tests, started and stopped by the tests.

- ``orthanc_dimse``: Orthanc (Debian ``orthanc``) with its DICOM port on, AE title ``ORTHANC``, checking the called
  AE title, and medad's AE title ``MEDAD`` registered as a modality (allowed C-FIND / C-GET / C-MOVE / C-STORE, its
  C-MOVE destination on ``move_port``).
- ``storescp``: dcmtk's ``storescp`` writing what it receives into a folder.
- ``silent_port``: a TCP port that accepts connections and never answers (a hung peer).
Tests skip with the reason when a binary is missing. pynetdicom's own ``storescp`` / ``findscu`` scripts (in the
virtual environment) are not dcmtk's and are never used: the binaries are taken from /usr/bin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.dicomweb.conftest import ORTHANC, Orthanc, free_port, running_orthanc, silent_tcp_port, stop_process

ORTHANC_AET, MEDAD_AET = "ORTHANC", "MEDAD"
USER, PASSWORD = "medad-dimse", "not-a-real-secret-4b1d"


def dcmtk(name: str) -> str:
    """The path of a dcmtk binary (``/usr/bin``), or skip the test naming the missing package."""
    path = Path("/usr/bin") / name
    if not path.is_file():
        pytest.skip(f"dcmtk's {name} is not installed (Debian package dcmtk)")
    return str(path)


@dataclasses.dataclass
class OrthancDimse(Orthanc):
    """A test Orthanc with its DICOM port: REST as in the DICOMweb tests, plus the DIMSE address."""

    dicom_port: int = 0
    move_port: int = 0

    def dicom_url(self, study: str | None = None, aet: str = ORTHANC_AET) -> str:
        """``dicom://ORTHANC@127.0.0.1:PORT[/STUDY]``."""
        return f"dicom://{aet}@127.0.0.1:{self.dicom_port}" + (f"/{study}" if study else "")


@pytest.fixture(scope="session")
def orthanc_dimse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancDimse]:
    """Orthanc with a DICOM port on loopback that knows medad's AE title; stopped after the session."""
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    root = tmp_path_factory.mktemp("orthanc-dimse")
    dicom, move = free_port(), free_port()
    settings = {
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AET,
        "DicomPort": dicom,
        "DicomCheckCalledAet": True,
        "DicomModalities": {"medad": {"AET": MEDAD_AET, "Host": "127.0.0.1", "Port": move}},
        "DicomScpTimeout": 30,
    }
    with running_orthanc(root, "medad-dimse-test", settings, user=(USER, PASSWORD)) as http:
        yield OrthancDimse(f"http://127.0.0.1:{http}", (USER, PASSWORD), dicom_port=dicom, move_port=move)


@dataclasses.dataclass
class StoreScp:
    """A running dcmtk ``storescp``: its AE title, port and the folder it writes into."""

    aet: str
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"dicom://{self.aet}@127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_storescp(root: Path) -> Iterator[StoreScp]:
    """dcmtk's storescp on a free loopback port, accepting any storage SOP class, writing into ``root/storescp``
    (its log beside it); stopped on leaving. Skips the test when dcmtk is missing."""
    binary = dcmtk("storescp")
    folder = root / "storescp"
    folder.mkdir()
    port = free_port()
    scp = StoreScp("STORESCP", port, folder)
    args = [binary, "--aetitle", scp.aet, "--output-directory", str(folder), "--promiscuous", str(port)]
    with (root / "storescp.log").open("w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(proc, port, root / "storescp.log")
            yield scp
        finally:
            stop_process(proc)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    """dcmtk's storescp (:func:`running_storescp`) for one test."""
    with running_storescp(tmp_path) as scp:
        yield scp


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited with code {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"storescp did not listen within 30 s; see {log}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def pynetdicom_peer(
    title: str, contexts: Iterable[str], handlers: Sequence[tuple[Any, Any]] = ()
) -> Iterator[int]:
    """A pynetdicom SCP named ``title`` on a free loopback port, accepting ``contexts`` and answering with
    ``handlers`` (``(evt.EVT_..., function)``); yields its port and shuts it down after."""
    from pynetdicom import AE

    ae = AE(ae_title=title)
    for uid in contexts:
        ae.add_supported_context(uid)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=list(handlers))
    try:
        yield port
    finally:
        server.shutdown()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never sends a byte (a hung PACS)."""
    with silent_tcp_port() as port:
        yield port
