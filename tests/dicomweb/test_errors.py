"""Bad DICOMweb input ends in one clear message and exit code 2; credentials stay out of messages."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.cli import run_medad
from tests.dicomweb.conftest import PASSWORD, free_port


def _score(monkeypatch, capsys, url: str, out, *extra: str) -> tuple[int, str]:
    return run_medad(
        monkeypatch, capsys, "score", url, "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu", *extra
    )


def _one_error_line(code: int, text: str) -> str:
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


def test_unreachable_server(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "1")
    url = f"http://127.0.0.1:{free_port()}/dicom-web/studies/1.2.3"
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert "cannot reach the DICOMweb server http://127.0.0.1:" in line and "check the host and port" in line
    assert "1.2.3" not in line  # no study UID in messages


def test_wrong_or_missing_credentials_give_401(credentials, tmp_path, monkeypatch, capsys) -> None:
    url = f"{credentials.dicomweb}/studies/1.2.3"
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD", "wrong-password-7d1e")
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert "refused access (HTTP 401)" in line and "MEDAD_DICOMWEB_USER" in line
    assert "wrong-password-7d1e" not in line and PASSWORD not in line
    monkeypatch.delenv("MEDAD_DICOMWEB_USER")
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert "HTTP 401" in line


def test_unknown_study(credentials, tmp_path, monkeypatch, capsys) -> None:
    url = f"{credentials.dicomweb}/studies/{generate_uid()}"
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert "has no instances of the study in the URL" in line or "HTTP 404" in line
    assert not (tmp_path / "out" / "predictions").exists()


class _HtmlHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>a web page, not DICOMweb</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def web_page() -> Iterator[str]:
    """A plain web server on loopback that answers every GET with an HTML page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_non_dicom_response(web_page, tmp_path, monkeypatch, capsys) -> None:
    line = _one_error_line(*_score(monkeypatch, capsys, f"{web_page}/wado/studies/1.2.3", tmp_path / "out"))
    assert "did not answer like a DICOMweb service" in line and "DICOMweb root" in line


def test_study_without_image_instances(credentials, tmp_path, monkeypatch, capsys) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no pixels
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "MEDADTEST02", "Test^Report", "SR"
    credentials.upload(ds, tmp_path)
    url = f"{credentials.dicomweb}/studies/{ds.StudyInstanceUID}"
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert "holds no image instances" in line and "MEDADTEST02" not in line


def test_deidentify_with_a_pacs_target_is_refused_before_scoring(tmp_path, monkeypatch, capsys) -> None:
    url = "http://127.0.0.1:9/dicom-web"
    line = _one_error_line(
        *_score(
            monkeypatch, capsys, str(tmp_path), tmp_path / "out", "--export", "dicom-seg", "--deidentify", "--to", url
        )
    )
    assert "--deidentify cannot be combined with a PACS target" in line
    assert not (tmp_path / "out").exists()
    code, text = run_medad(
        monkeypatch, capsys, "export", str(tmp_path), "--format", "dicom-seg", "--deidentify", "--to", url
    )
    assert "--deidentify cannot be combined" in _one_error_line(code, text)


def test_credentials_in_the_url_are_refused(tmp_path, monkeypatch, capsys) -> None:
    line = _one_error_line(
        *_score(monkeypatch, capsys, "http://user:pw-4411@127.0.0.1:9/dicom-web/studies/1.2", tmp_path / "out")
    )
    assert "carries credentials" in line and "pw-4411" not in line


def test_url_without_a_study_and_to_without_dicom_formats(tmp_path, monkeypatch, capsys) -> None:
    line = _one_error_line(*_score(monkeypatch, capsys, "http://127.0.0.1:9/dicom-web", tmp_path / "out"))
    assert "names no study" in line
    line = _one_error_line(
        *_score(monkeypatch, capsys, str(tmp_path), tmp_path / "o2", "--export", "png", "--to", "http://127.0.0.1:9/x")
    )
    assert "add dicom-seg and/or pmap" in line
