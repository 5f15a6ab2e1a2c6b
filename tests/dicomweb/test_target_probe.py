"""``medad score --to URL`` checks that the destination answers DICOMweb before it scores anything, and a server
that accepts connections but never answers is reported as a timeout, not as unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli import run_medad
from tests.dicomweb.conftest import free_port, silent_tcp_port
from tests.dicomweb.test_errors import _one_error_line, web_page  # noqa: F401 (a fixture)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback TCP server that accepts every connection and never sends a byte."""
    with silent_tcp_port() as port:
        yield f"http://127.0.0.1:{port}/dicom-web"


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


def test_a_destination_that_dies_after_the_check_keeps_the_scores_and_a_rerun_stores(
    credentials, tmp_path, monkeypatch, capsys
) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    from tests.dicomweb.conftest import ct_mr_study
    from tests.dicomweb.test_roundtrip import _results, _score_args

    study = ct_mr_study(credentials, tmp_path)
    url, out = f"{credentials.dicomweb}/studies/{study}", tmp_path / "out"
    args = [*_score_args(url, out), "--export", "dicom-seg", "--to", credentials.dicomweb]
    real_store = DICOMwebClient.store_instances

    def dead(self, *a, **k):  # the server answered the check, then went away before the store
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(DICOMwebClient, "store_instances", dead)
    code, text = run_medad(monkeypatch, capsys, *args)
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in text, text
    assert "cannot reach the DICOMweb server" in errors[0] and "re-run resumes" in errors[0]
    scores = (out / "scores.csv").read_bytes()  # the local results are kept
    assert _results(credentials, study) == {}

    monkeypatch.setattr(DICOMwebClient, "store_instances", real_store)
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 0, text
    assert "stored 4 DICOM object(s); 0 were already on the server" in text, text  # binary + fractional SEG
    assert (out / "scores.csv").read_bytes() == scores and len(_results(credentials, study)) == 4


def test_export_to_a_dead_destination_is_refused_before_the_export_is_written(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "0")
    out = tmp_path / "out"
    args = ["score", str(_image_folder(tmp_path)), "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu"]
    assert run_medad(monkeypatch, capsys, *args)[0] == 0
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    line = _one_error_line(*run_medad(monkeypatch, capsys, "export", str(out), "--format", "dicom-seg", "--to", url))
    assert "cannot reach the DICOMweb server" in line and "checking the --to destination before exporting" in line
    assert not (out / "export").exists()  # nothing was exported first
