"""Failure statuses, a DIMSE timeout and an unknown C-MOVE destination, from a pynetdicom Q/R peer on loopback that
answers as told; and an interrupted fetch from Orthanc resumes without fetching again what it holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset

from medad.dimse import DicomPeer, DimseError, DimseSettings, fetch_study, parse_dicom_url
from tests.dicomweb.conftest import ct_mr_study, free_port
from tests.dimse.conftest import pynetdicom_peer

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.826.0.1.3680043.8.498.1"


class Behaviour:
    """What the fake peer answers: a C-FIND status (or a delay), a C-GET status, a C-MOVE destination."""

    find_status = 0xFF00
    find_delay = 0.0
    get_status = 0x0000


def _answer(identifier: Dataset) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = identifier.QueryRetrieveLevel
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = STUDY, STUDY + ".1", "CT"
    if identifier.QueryRetrieveLevel == "IMAGE":
        ds.SOPInstanceUID, ds.SOPClassUID = STUDY + ".1.1", CT_IMAGE
    return ds


@pytest.fixture
def fake_peer() -> Iterator[tuple[int, type[Behaviour]]]:
    """A pynetdicom Study Root Q/R SCP (FIND, GET, MOVE) on a free loopback port."""
    from pynetdicom import evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    class Told(Behaviour):
        pass

    def find(event):
        time.sleep(Told.find_delay)
        if Told.find_status == 0xFF00:
            yield 0xFF00, _answer(event.identifier)
            yield 0x0000, None
        else:
            yield Told.find_status, None

    def get(event):
        yield 1
        yield Told.get_status, None

    def move(event):
        yield None, None  # the destination AE title is unknown to this peer

    contexts = (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )
    handlers = [(evt.EVT_C_FIND, find), (evt.EVT_C_GET, get), (evt.EVT_C_MOVE, move)]
    with pynetdicom_peer("FAKEPACS", contexts, handlers) as port:
        yield port, Told


def _fetch(port: int, tmp: Path, **settings: object) -> str:
    with pytest.raises(DimseError) as info:
        fetch_study(DicomPeer("FAKEPACS", "127.0.0.1", port, STUDY), tmp, DimseSettings(**settings))  # type: ignore[arg-type]
    message = str(info.value)
    assert f"FAKEPACS@127.0.0.1:{port}" in message and STUDY not in message
    return message


def test_a_c_find_failure_status(fake_peer, tmp_path) -> None:
    port, told = fake_peer
    told.find_status = 0xA700
    message = _fetch(port, tmp_path)
    assert "answered status 0xA700 (Failure) while listing the study's series (C-FIND)" in message


def test_a_c_get_failure_status(fake_peer, tmp_path) -> None:
    port, told = fake_peer
    told.get_status = 0xC000
    message = _fetch(port, tmp_path)
    assert "answered status 0xC000 (Failure) while retrieving a series (C-GET)" in message


def test_a_peer_that_answers_too_late_times_out(fake_peer, tmp_path) -> None:
    port, told = fake_peer
    told.find_delay = 2.0
    message = _fetch(port, tmp_path, dimse_timeout=1.0)
    assert "did not answer within 1 s while listing the study's series (C-FIND)" in message
    assert "MEDAD_DIMSE_TIMEOUT" in message


def test_an_unknown_c_move_destination_names_the_ae_title_to_register(fake_peer, tmp_path) -> None:
    port, _ = fake_peer
    message = _fetch(port, tmp_path, calling_aet="AINODE", move_port=free_port())
    assert "does not know medad's AE title AINODE as a C-MOVE destination (status 0xA801)" in message
    assert "register AINODE" in message


def test_an_interrupted_fetch_resumes(orthanc_dimse, tmp_path, caplog) -> None:
    study = ct_mr_study(orthanc_dimse, tmp_path)
    peer = parse_dicom_url(orthanc_dimse.dicom_url(study), study=True)
    folder = fetch_study(peer, tmp_path / "out", DimseSettings())
    first = sorted(folder.glob("*.dcm"))
    assert len(first) == 2
    stamps = {p: p.stat().st_mtime_ns for p in first}
    first[0].unlink()  # as if the fetch had stopped before this instance
    with caplog.at_level(logging.DEBUG):
        fetch_study(peer, tmp_path / "out", DimseSettings())
    assert "1 instance(s) fetched, 1 already on disk" in caplog.text  # the complete series was not retrieved
    assert study not in caplog.text  # pynetdicom's logs of every identifier stay out of a DEBUG log
    assert sorted(folder.glob("*.dcm")) == first
    assert first[0].stat().st_mtime_ns != stamps[first[0]] and first[1].stat().st_mtime_ns == stamps[first[1]]


@pytest.fixture
def find_only_peer() -> Iterator[int]:
    """A pynetdicom peer that offers C-FIND but neither C-GET nor C-MOVE."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    with pynetdicom_peer("FAKEPACS", [StudyRootQueryRetrieveInformationModelFind]) as port:
        yield port


def test_a_peer_without_c_get_says_to_use_c_move(find_only_peer: int, tmp_path) -> None:
    message = _fetch(find_only_peer, tmp_path)
    assert "does not offer Study Root Query/Retrieve Information Model - GET" in message
    assert "fetch with C-MOVE instead (--move PORT" in message


def test_a_busy_peer_rejects_transiently_and_the_message_says_retry(tmp_path) -> None:
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def busy(event):  # A-ASSOCIATE-RJ: rejected transient, by the presentation service provider, local limit
        event.assoc.acse.send_reject(0x02, 0x03, 0x02)
        time.sleep(0.5)  # let the rejection reach medad before pynetdicom closes the connection

    with pynetdicom_peer("FAKEPACS", [StudyRootQueryRetrieveInformationModelFind], [(evt.EVT_REQUESTED, busy)]) as port:
        message = _fetch(port, tmp_path)
    assert "rejected the association while fetching a study (Rejected Transient" in message
    assert "retry later" in message


def test_a_c_move_port_in_use_is_named(fake_peer, tmp_path) -> None:
    import socket

    port, _ = fake_peer
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen(1)
        busy = int(taken.getsockname()[1])
        with pytest.raises(DimseError) as info:
            fetch_study(DicomPeer("FAKEPACS", "127.0.0.1", port, STUDY), tmp_path, DimseSettings(move_port=busy))
    assert f"medad cannot listen on port {busy} for C-MOVE" in str(info.value) and "give --move a free port" in str(
        info.value
    )
