"""The node's state folder: feed position and studies survive a reopen (a restart or a kill), a study left running is
queued again, the queue bound holds the feed back, and the shareable report holds no UID."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from medad.dicomweb import DicomWebError
from medad.watch import WatchSettings, WatchState
from medad.watch.feed import Change, Page
from medad.watch.node import Node

A, B, C = "1.2.3.4.100", "1.2.3.4.200", "1.2.3.4.300"


def test_position_and_studies_survive_a_reopen(tmp_path: Path) -> None:
    state = WatchState(tmp_path)
    assert state.since() is None
    assert len(state.advance(7, [A, B])) == 2
    state.close()
    state = WatchState(tmp_path)
    assert state.since() == 7
    assert [s.study_uid for s in state.studies()] == [A, B]
    assert state.count() == 2


def test_a_study_running_at_a_crash_is_queued_again_and_claimed_first(tmp_path: Path) -> None:
    state = WatchState(tmp_path)
    state.advance(3, [A, B])
    claimed = state.claim()
    assert claimed is not None and (claimed.study_uid, claimed.status, claimed.attempts) == (A, "running", 1)
    state.close()  # the node dies here: no finish()
    state = WatchState(tmp_path)
    assert state.requeue_interrupted() == [claimed.pseudonym]
    again = state.claim()
    assert again is not None and (again.study_uid, again.attempts) == (A, 2)


def test_a_study_seen_again_is_queued_again_only_if_it_failed(tmp_path: Path) -> None:
    state = WatchState(tmp_path)
    state.advance(1, [A, B, C])
    for uid, status in ((A, "done"), (B, "failed")):
        state.claim()
        state.finish(uid, status, "why" if status == "failed" else "", {"stored": 2}, ["9.9.9"] if uid == A else [])
    # C is still queued; the PACS reports all three stable again (e.g. medad's own SEG made A change)
    assert len(state.advance(9, [A, B, C])) == 1
    assert {s.study_uid: s.status for s in state.studies()} == {A: "done", B: "queued", C: "queued"}
    assert state.study(A).result_uids == ("9.9.9",)


def test_the_report_names_studies_by_pseudonym_only(tmp_path: Path) -> None:
    state = WatchState(tmp_path)
    state.advance(1, [A])
    state.claim()
    state.finish(A, "done", record={"stored": 2, "already_stored": 0}, result_uids=["1.2.3.4.555"])
    report = (tmp_path / "report.json").read_text()
    assert A not in report and "1.2.3.4.555" not in report
    row = json.loads(report)["studies"][0]
    assert row["study"].startswith("study-") and (row["status"], row["results"], row["stored"]) == ("done", 1, 2)
    assert json.loads(report)["research_use_only"] is True


class _Feed:
    """A change feed in memory: three stable studies among other changes."""

    server = "memory"
    changes = (Change(1, "NewInstance", "i1"), Change(2, "StableStudy", "a"), Change(3, "StableSeries", "s"),
               Change(4, "StableStudy", "b"), Change(5, "StableStudy", "c"), Change(6, "StablePatient", "p"))

    def read(self, since: int, limit: int = 100) -> Page:
        page = tuple(c for c in self.changes if c.seq > since)[:limit]
        return Page(page, True, page[-1].seq if page else 6)

    def study_uid(self, resource_id: str) -> str:
        return {"a": A, "b": B, "c": C}[resource_id]


def test_the_queue_bound_holds_the_feed_back_without_losing_a_study(tmp_path: Path) -> None:
    node = Node(WatchSettings(source="http://pacs", to="http://pacs/dicom-web", state_dir=tmp_path, queue=2))
    node.state, node.feed = WatchState(tmp_path), _Feed()  # type: ignore[assignment]
    node.state.advance(0)
    assert node._read_feed() is False  # two studies wait: the third stays in the feed
    assert [s.study_uid for s in node.state.studies()] == [A, B] and node.state.since() == 4
    node.state.claim()
    node.state.finish(A, "done")
    assert node._read_feed() is True
    assert [s.study_uid for s in node.state.studies()] == [A, B, C] and node.state.since() == 6


class _DeadFeed(_Feed):
    def read(self, since: int, limit: int = 100) -> Page:
        raise DicomWebError("cannot reach the DICOMweb server http://pacs while reading Orthanc's change feed")


def test_a_source_that_stops_answering_is_logged_while_following_and_ends_a_once_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for once in (False, True):
        node = Node(WatchSettings(source="http://pacs", to="http://pacs/dicom-web", state_dir=tmp_path, once=once))
        node.state, node.feed = WatchState(tmp_path), _DeadFeed()  # type: ignore[assignment]
        with caplog.at_level(logging.WARNING, logger="medad.watch"):
            assert node._read_feed() is False
        assert (node._halt is None) is not once
        node.state.close()
    assert "the source did not answer (cannot reach the DICOMweb server http://pacs" in caplog.text


class _EmptyFeed(_Feed):
    def read(self, since: int, limit: int = 100) -> Page:
        return Page((), True, since)


def test_an_idle_node_waits_for_its_next_poll_instead_of_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(WatchSettings(source="http://pacs", to="http://pacs/dicom-web", state_dir=tmp_path, poll=0.5))
    node.feed = _EmptyFeed()  # type: ignore[assignment]
    monkeypatch.setattr(node, "_start", lambda: None)  # no servers, no model: the loop alone
    claims: list[int] = []
    claim = WatchState.claim
    monkeypatch.setattr(WatchState, "claim", lambda self: claims.append(1) or claim(self))
    timer = threading.Timer(1.5, node.stop.set)
    timer.start()
    summary = node.run()
    timer.join()
    assert summary.done == 0 and len(claims) <= 6
