"""``medad score --to URL`` checks that the destination answers DICOMweb before it scores anything, and a server
that accepts connections but never answers is reported as a timeout, not as unreachable."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli import run_medad
from tests.dicomweb.conftest import free_port
from tests.dicomweb.test_errors import _one_error_line, web_page  # noqa: F401 (a fixture)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback TCP server that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # kept open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/dicom-web"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def _image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(folder / "a.png")
    return folder


def _score_to(monkeypatch, capsys, tmp_path: Path, url: str) -> tuple[int, str]:
    args = ["score", str(_image_folder(tmp_path)), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "out")]
    return run_medad(monkeypatch, capsys, *args, "--device", "cpu", "--export", "dicom-seg", "--to", url)


def test_a_dead_destination_is_refused_before_scoring(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "0")
    line = _one_error_line(*_score_to(monkeypatch, capsys, tmp_path, f"http://127.0.0.1:{free_port()}/dicom-web"))
    assert "cannot reach the DICOMweb server" in line and "checking the --to destination before scoring" in line
    assert not (tmp_path / "out" / "predictions").exists()  # nothing was scored first
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_a_destination_that_is_not_dicomweb_is_refused_before_scoring(web_page, tmp_path, monkeypatch, capsys):  # noqa: F811
    line = _one_error_line(*_score_to(monkeypatch, capsys, tmp_path, f"{web_page}/dicom-web"))
    assert "did not answer" in line and "DICOMweb" in line
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_destination_that_never_answers_is_a_timeout(silent_server, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "1")
    monkeypatch.setenv("MEDAD_DICOMWEB_TIMEOUT", "0.5")
    line = _one_error_line(*_score_to(monkeypatch, capsys, tmp_path, silent_server))
    assert "did not answer within 0.5 s" in line and "MEDAD_DICOMWEB_TIMEOUT" in line
    assert "cannot reach" not in line
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_study_url_on_a_server_that_never_answers_is_a_timeout(silent_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "0")
    monkeypatch.setenv("MEDAD_DICOMWEB_TIMEOUT", "0.5")
    url = f"{silent_server}/studies/1.2.3"
    args = ["score", url, "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "out"), "--device", "cpu"]
    line = _one_error_line(*run_medad(monkeypatch, capsys, *args))
    assert "did not answer within 0.5 s" in line and "cannot reach" not in line and "1.2.3" not in line


def test_a_live_destination_passes_the_check_and_a_refusal_comes_before_scoring(
    credentials, tmp_path, monkeypatch, capsys
) -> None:
    from medad.dicomweb import check_target

    check_target("dicom-seg", False, credentials.dicomweb, probe=True)  # Orthanc answers the study search
    monkeypatch.delenv("MEDAD_DICOMWEB_USER")
    line = _one_error_line(*_score_to(monkeypatch, capsys, tmp_path, credentials.dicomweb))
    assert "refused access (HTTP 401)" in line and "before scoring" in line
    assert not (tmp_path / "out" / "predictions").exists()


def test_export_to_a_dead_destination_is_refused_before_the_export_is_written(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "0")
    out = tmp_path / "out"
    args = ["score", str(_image_folder(tmp_path)), "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu"]
    assert run_medad(monkeypatch, capsys, *args)[0] == 0
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    line = _one_error_line(*run_medad(monkeypatch, capsys, "export", str(out), "--format", "dicom-seg", "--to", url))
    assert "cannot reach the DICOMweb server" in line and "checking the --to destination before exporting" in line
    assert not (out / "export").exists()  # nothing was exported first
