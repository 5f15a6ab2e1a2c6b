"""A DIMSE peer that refuses, is dead, hangs, aborts, answers a failure or holds no images ends the command in one
`error:` line naming the peer (AET@host:port) and the fix, exit code 2; nothing already written locally is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.cli import run_medad
from tests.dicomweb.conftest import ct_mr_study, free_port
from tests.dimse.conftest import OrthancDimse, StoreScp, pynetdicom_peer

PATIENT = ("MEDADTEST01", "Test^Patient")


def _score(monkeypatch, capsys, url: str, out: Path, *extra: str) -> tuple[int, str]:
    args = ["score", url, "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu", "--no-heatmaps"]
    return run_medad(monkeypatch, capsys, *args, *extra)


def _one_error_line(code: int, text: str) -> str:
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text and not any(p in text for p in PATIENT)
    return lines[0]


def test_wrong_called_ae_title_is_rejected_with_the_reason(orthanc_dimse: OrthancDimse, tmp_path, monkeypatch, capsys):
    url = orthanc_dimse.dicom_url("1.2.3.4", aet="NOTORTHANC")
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert f"NOTORTHANC@127.0.0.1:{orthanc_dimse.dicom_port} rejected the association" in line
    assert "Called AE title not recognised" in line and "check the called AE title" in line
    assert "1.2.3.4" not in line  # no study UID in messages


def test_dead_port(tmp_path, monkeypatch, capsys) -> None:
    port = free_port()
    line = _one_error_line(*_score(monkeypatch, capsys, f"dicom://PACS@127.0.0.1:{port}/1.2.3", tmp_path / "out"))
    assert f"nothing listens at PACS@127.0.0.1:{port}" in line and "connection refused" in line
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_peer_that_never_answers_times_out(silent_port: int, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DIMSE_ACSE_TIMEOUT", "1")
    url = f"dicom://PACS@127.0.0.1:{silent_port}/1.2.3"
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert f"PACS@127.0.0.1:{silent_port} accepted the connection but did not accept the association within 1 s" in line
    assert "MEDAD_DIMSE_ACSE_TIMEOUT" in line


def test_dead_to_destination_is_refused_before_scoring(orthanc_dimse, tmp_path, monkeypatch, capsys) -> None:
    port = free_port()
    extra = ("--export", "dicom-seg", "--to", f"dicom://STORE@127.0.0.1:{port}")
    line = _one_error_line(*_score(monkeypatch, capsys, orthanc_dimse.dicom_url("1.2.3"), tmp_path / "out", *extra))
    assert f"nothing listens at STORE@127.0.0.1:{port} while checking the --to destination before scoring" in line
    assert not (tmp_path / "out" / "predictions").exists()


def test_unknown_study(orthanc_dimse, tmp_path, monkeypatch, capsys) -> None:
    study = generate_uid()
    line = _one_error_line(*_score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), tmp_path / "out"))
    assert "has no series of the study in the URL" in line and study not in line


def _seg_only_study(orthanc: OrthancDimse, tmp: Path) -> str:
    """A study holding one SEG object and no image (uploaded by REST)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, (ds.PatientID, ds.PatientName) = "SEG", PATIENT
    orthanc.upload(ds, tmp)
    return str(ds.StudyInstanceUID)


def test_a_study_without_image_series(orthanc_dimse, tmp_path, monkeypatch, capsys) -> None:
    study = _seg_only_study(orthanc_dimse, tmp_path)
    line = _one_error_line(*_score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), tmp_path / "out"))
    assert f"on ORTHANC@127.0.0.1:{orthanc_dimse.dicom_port} has no image series" in line


def test_an_unregistered_calling_ae_title_is_refused(orthanc_dimse, tmp_path, monkeypatch, capsys) -> None:
    study = ct_mr_study(orthanc_dimse, tmp_path)
    extra = ("--calling-aet", "STRANGER")
    line = _one_error_line(*_score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), tmp_path / "out", *extra))
    assert f"ORTHANC@127.0.0.1:{orthanc_dimse.dicom_port}" in line and "STRANGER" in line
    assert "aborted the association while listing the study's series (C-FIND)" in line


@pytest.fixture
def aborting_peer() -> Iterator[int]:
    """A pynetdicom Q/R SCP that aborts the association on every C-FIND (a PACS that gives up mid-request)."""
    from pynetdicom import evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        Verification,
    )

    def abort(event):
        event.assoc.abort()
        yield 0xFF00, None

    contexts = (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet, Verification)
    with pynetdicom_peer("ABORTER", contexts, [(evt.EVT_C_FIND, abort)]) as port:
        yield port


def test_an_aborted_association(aborting_peer: int, tmp_path, monkeypatch, capsys) -> None:
    url = f"dicom://ABORTER@127.0.0.1:{aborting_peer}/1.2.3"
    line = _one_error_line(*_score(monkeypatch, capsys, url, tmp_path / "out"))
    assert f"ABORTER@127.0.0.1:{aborting_peer} aborted the association while listing the study's series" in line


@pytest.fixture
def echo_only_peer() -> Iterator[int]:
    """A pynetdicom peer that answers C-ECHO but accepts no SEG / Parametric Map storage."""
    from pynetdicom.sop_class import Verification

    with pynetdicom_peer("ECHOONLY", [Verification]) as port:
        yield port


@pytest.mark.slow
def test_a_failed_store_keeps_the_results_and_a_rerun_stores_them(
    orthanc_dimse, echo_only_peer: int, storescp: StoreScp, tmp_path, monkeypatch, capsys
) -> None:
    study = ct_mr_study(orthanc_dimse, tmp_path)
    out, url = tmp_path / "run", orthanc_dimse.dicom_url(study)
    extra = ("--export", "dicom-seg,pmap", "--to", f"dicom://ECHOONLY@127.0.0.1:{echo_only_peer}")
    code, text = _score(monkeypatch, capsys, url, out, *extra)
    assert code == 2 and "Traceback" not in text, text
    assert f"error: ECHOONLY@127.0.0.1:{echo_only_peer} accepted none of the services medad asked for" in text
    assert "(Parametric Map Storage, Segmentation Storage)" in text
    assert (out / "scores.csv").is_file() and len(list((out / "export").glob("*.dcm"))) == 6  # kept
    code, text = _score(monkeypatch, capsys, url, out, "--export", "dicom-seg,pmap", "--to", storescp.url)
    assert code == 0 and "stored 6 DICOM object(s)" in text, text
    assert len([p for p in storescp.folder.iterdir() if p.is_file()]) == 6
