"""A fresh Orthanc per test for `medad watch`: the change feed starts empty, so each test sees only its studies.

Reuses the DICOMweb tests' :class:`~tests.dicomweb.conftest.Orthanc` handle and plugin lookup; the config differs in
``StableAge`` (1 s, so uploaded studies become stable quickly). Started on a free loopback port, stopped in
teardown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.dicomweb.conftest import ORTHANC, PASSWORD, USER, Orthanc, _plugin, free_port, running_orthanc

PATIENT_ID, PATIENT_NAME = "WATCHPID4711", "Canary^Watchpatient"
RESULT_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30")  # SEG, Parametric Map


@pytest.fixture
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Start an empty Orthanc (DICOMweb plugin, HTTP basic auth, StableAge 1 s); stop it after the test."""
    plugin = _plugin()
    if ORTHANC is None or plugin is None:
        pytest.skip("Orthanc or its DICOMweb plugin is not installed (Debian packages orthanc, orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("pacs")
    settings = {
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    with running_orthanc(root, "medad-watch-test", settings) as port:
        yield Orthanc(f"http://127.0.0.1:{port}", (USER, PASSWORD))


def upload_study(
    pacs: Orthanc, tmp: Path, source: str = "CT_small.dcm", *, broken: bool = False, study: str | None = None
) -> str:
    """Upload a copy of one of pydicom's real files as a new one-series study (or a new series of ``study``);
    return its StudyInstanceUID.

    ``broken`` cuts the pixel data to half its length: Orthanc stores it, no reader can decode it.
    """
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.PatientName = PATIENT_ID, PATIENT_NAME
    if broken:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    pacs.upload(ds, tmp)
    return str(ds.StudyInstanceUID)


def wait_stable(pacs: Orthanc, *study_uids: str, after: int = 0, timeout: float = 60) -> None:
    """Wait until Orthanc's feed says each of these studies is stable (in a change after number ``after``)."""
    ids = {pacs.study_id(uid) for uid in study_uids}
    deadline = time.monotonic() + timeout
    while True:
        changes = pacs.rest(f"/changes?since={after}&limit=10000")["Changes"]
        if ids <= {c["ID"] for c in changes if c["ChangeType"] == "StableStudy"}:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the studies did not become stable within {timeout} s")
        time.sleep(0.3)


def result_series(pacs: Orthanc, study_uid: str) -> dict[str, int]:
    """medad's results in a study, from Orthanc (QIDO-RS): instance count per result SeriesInstanceUID."""
    found = pacs.rest(f"/dicom-web/studies/{study_uid}/instances?includefield=00080016")
    counts: dict[str, int] = {}
    for item in found:
        if item["00080016"]["Value"][0] in RESULT_CLASSES:
            series = item["0020000E"]["Value"][0]
            counts[series] = counts.get(series, 0) + 1
    return counts
