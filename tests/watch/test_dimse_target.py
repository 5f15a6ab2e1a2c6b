"""`medad watch --to dicom://AET@HOST:PORT`: the node follows Orthanc's feed and sends each study's results with
C-STORE to a DIMSE peer (dcmtk's storescp on loopback); a peer that is not there is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from medad.watch import WatchState
from tests.cli import run_medad
from tests.dicomweb.conftest import free_port
from tests.dimse.conftest import running_storescp
from tests.watch.conftest import PASSWORD, RESULT_CLASSES, USER, Orthanc, upload_study, wait_stable


def _watch(pacs: Orthanc, state: Path, to: str) -> list[str]:
    return ["watch", pacs.url, "--to", to, "--state", str(state), "--model", "ad_dinov3_tiny", "--format", "dicom-seg",
            "--device", "cpu", "--once", "--backlog", "--poll", "0.5", "--calling-aet", "MEDADNODE"]


def test_watch_stores_results_on_a_dimse_peer(pacs: Orthanc, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.setenv("MEDAD_DIMSE_CONNECT_TIMEOUT", "3")
    study = upload_study(pacs, tmp_path)
    wait_stable(pacs, study)

    dead = f"dicom://NOBODY@127.0.0.1:{free_port()}"
    code, text = run_medad(monkeypatch, capsys, *_watch(pacs, tmp_path / "state", dead))
    assert code == 2 and "Traceback" not in text, text
    (error,) = [line for line in text.splitlines() if line.startswith("error:")]
    assert "NOBODY@127.0.0.1" in error and "before watching" in error  # refused before the model is built

    with running_storescp(tmp_path) as scp:
        code, text = run_medad(monkeypatch, capsys, *_watch(pacs, tmp_path / "state", scp.url))
        received = sorted(p for p in scp.folder.iterdir() if p.is_file())
    assert code == 0, text
    assert "1 done, 0 failed" in text and study not in text
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in received]
    assert len(datasets) == 2  # binary + fractional SEG, sent with C-STORE, attached to the source study
    assert {str(ds.SOPClassUID) for ds in datasets} == {RESULT_CLASSES[0]}
    assert {str(ds.StudyInstanceUID) for ds in datasets} == {study}
    state = WatchState(tmp_path / "state")
    try:
        (record,) = state.studies()
    finally:
        state.close()
    assert record.status == "done" and record.record["stored"] == 2 and record.record["already_stored"] == 0
    assert sorted(record.result_uids) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    assert json.dumps(record.record).find(study) == -1


@pytest.mark.parametrize(
    ("to", "message"),
    [("dicom://BAD\\AET@127.0.0.1:104", "is not a DICOM AE title"), ("dicom://PACS@127.0.0.1:0", "is not 1-65535")],
)
def test_a_malformed_dimse_destination_is_refused_before_any_work(
    tmp_path: Path, monkeypatch, capsys, to: str, message: str
) -> None:
    args = ["watch", "http://127.0.0.1:9", "--to", to, "--state", str(tmp_path / "state"), "--model", "x", "--once"]
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and text.startswith("error: ") and message in text and "Traceback" not in text, text
    assert not (tmp_path / "state").exists()
