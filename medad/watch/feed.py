"""Orthanc's change feed (REST ``/changes``): which studies became stable since the node last looked.

Orthanc numbers every change (new instance, new series, stable study, ...) with a growing ``Seq``; the node keeps
the last ``Seq`` it has read (``since``) and asks for the changes after it. A ``StableStudy`` change says a study
has received no new instance for Orthanc's ``StableAge`` seconds: that is when the node scores it. The REST calls
use the DICOMweb session (credentials from the environment, TLS verification, retries, timeouts) and its error
messages, which name the server only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import requests

from medad.dicomweb.client import DicomWebError, make_session, parse_store_url, translated
from medad.watch.settings import WatchError

log = logging.getLogger("medad.watch")

STABLE_STUDY = "StableStudy"
PAGE = 100


@dataclasses.dataclass(frozen=True)
class Change:
    """One entry of the feed: its sequence number, type and Orthanc's id of the resource."""

    seq: int
    kind: str
    resource_id: str


@dataclasses.dataclass(frozen=True)
class Page:
    """A page of the feed: its changes, whether it reached the end, and the last sequence number it covers."""

    changes: tuple[Change, ...]
    done: bool
    last: int


class OrthancFeed:
    """Reads ``SOURCE/changes`` and ``SOURCE/studies/{id}`` of an Orthanc REST root."""

    def __init__(self, source: str, ca_bundle: str | None = None) -> None:
        self.root = parse_store_url(source).base_url
        self.server = self.root
        self._session, self._timeout = make_session(ca_bundle)

    def _get(self, path: str, what: str) -> Any:
        """GET ``root + path`` and decode the JSON; failures become one :class:`DicomWebError` / :class:`WatchError`."""
        with translated(self.server, what):
            response = self._session.get(f"{self.root}{path}", timeout=self._timeout)
            if response.status_code == 404 and path.startswith("/changes"):
                raise WatchError(_not_orthanc(self.server))
            response.raise_for_status()
            try:
                return response.json()
            except requests.JSONDecodeError:
                raise WatchError(_not_orthanc(self.server)) from None

    def last(self) -> int:
        """The sequence number of the newest change (where a node that skips the backlog starts)."""
        answer = self._get("/changes?last", "reading the newest change of Orthanc's feed (/changes)")
        return _last(answer, self.server)

    def read(self, since: int, limit: int = PAGE) -> Page:
        """The changes after ``since`` (at most ``limit``)."""
        answer = self._get(f"/changes?since={since}&limit={limit}", "reading Orthanc's change feed (/changes)")
        try:
            changes = tuple(Change(int(c["Seq"]), str(c["ChangeType"]), str(c["ID"])) for c in answer["Changes"])
            return Page(changes, bool(answer["Done"]), _last(answer, self.server))
        except (KeyError, TypeError, ValueError):
            raise WatchError(_not_orthanc(self.server)) from None

    def study_uid(self, resource_id: str) -> str | None:
        """The StudyInstanceUID of an Orthanc study id; None when the study has been deleted since."""
        try:
            answer = self._get(f"/studies/{resource_id}", "looking up a stable study (/studies)")
        except DicomWebError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        uid = (answer.get("MainDicomTags") or {}).get("StudyInstanceUID") if isinstance(answer, dict) else None
        return str(uid) if uid else None


def _last(answer: Any, server: str) -> int:
    try:
        return int(answer["Last"])
    except (KeyError, TypeError, ValueError):
        raise WatchError(_not_orthanc(server)) from None


def _not_orthanc(server: str) -> str:
    return (
        f"{server} did not answer like Orthanc's REST API (GET /changes); give Orthanc's REST root as SOURCE "
        "(e.g. http://HOST:8042, not its /dicom-web root): other PACS have no change feed medad can follow "
        "(docs/hospital.md#sources-without-a-change-feed says what to run instead)"
    )
