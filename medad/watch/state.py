"""The node's state: where it is in the PACS's change feed and what it did with each study, safe across ``kill -9``.

One SQLite database (stdlib ``sqlite3``, write-ahead log, ``synchronous=FULL``) in ``STATE/private/`` holds the
feed position (``since``) and one row per study: its StudyInstanceUID (patient-linked, so only here), its keyed
pseudonym, the status (``queued`` -> ``running`` -> ``done`` | ``failed``), the reason of a failure, the number of
attempts and the result UIDs. New studies and the new feed position are written in one transaction, so a crash
never loses a study nor reads one twice; a study found ``running`` when the node starts was cut off by a crash
and is queued again (its result UIDs are deterministic, so the redo stores nothing twice).

``STATE/report.json`` is the shareable record: the same rows by pseudonym, without UIDs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medad.errors import ConfigError
from medad.utils.io import write_json_atomic
from medad.utils.privacy import case_id, private_dir

DB_NAME = "watch.sqlite"
REPORT_NAME = "report.json"
STATUSES = ("queued", "running", "done", "failed")
PENDING = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feed (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    pseudonym TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    seen INTEGER NOT NULL,
    record TEXT NOT NULL DEFAULT '{}',
    result_uids TEXT NOT NULL DEFAULT '[]',
    updated TEXT NOT NULL
);
"""


def study_pseudonym(study_uid: str) -> str:
    """The keyed pseudonym that names a study in logs and the shareable report (``study-`` + 12 hex digits)."""
    return "study-" + case_id(study_uid, salt="medad watch study")[len("case-") :]


@dataclasses.dataclass(frozen=True)
class Study:
    """One study the node knows: its UID (private), pseudonym, status and what was done."""

    study_uid: str
    pseudonym: str
    status: str
    reason: str
    attempts: int
    record: Mapping[str, Any]
    result_uids: tuple[str, ...]

    def shareable(self) -> dict[str, Any]:
        """The row for ``report.json``: no UID."""
        return {
            "study": self.pseudonym,
            "status": self.status,
            "reason": self.reason,
            "attempts": self.attempts,
            **dict(self.record),
            "results": len(self.result_uids),
        }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class WatchState:
    """The state folder of one node (see the module docstring); thread-safe (one connection behind a lock)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.private = private_dir(self.folder)
            self._db = sqlite3.connect(self.private / DB_NAME, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigError(
                f"the state folder {self.folder} cannot hold the node's database ({exc}); give a writable folder "
                "of a medad watch node with --state"
            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database (the WAL is checkpointed)."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def since(self) -> int | None:
        """The last change of the feed already read, or None before the first read."""
        with self._lock:
            row = self._db.execute("SELECT value FROM feed WHERE key = 'since'").fetchone()
        return None if row is None else int(row[0])

    def advance(self, since: int, study_uids: Iterable[str] = (), renewed: Iterable[str] = ()) -> list[str]:
        """Queue ``study_uids`` and move the feed position to ``since``, in one transaction.

        A study seen before is queued again if it failed (new images may have arrived) or is among ``renewed``
        (done, but the PACS now holds images it did not score); one queued or running is left as it is. Returns
        the pseudonyms of the studies queued.
        """
        again = set(renewed)
        queued = []
        with self._transaction() as db:
            for uid in study_uids:
                row = db.execute("SELECT status FROM studies WHERE study_uid = ?", (uid,)).fetchone()
                if row is None:
                    seen = db.execute("SELECT COALESCE(MAX(seen), 0) + 1 FROM studies").fetchone()[0]
                    db.execute(
                        "INSERT INTO studies (study_uid, pseudonym, status, seen, updated) "
                        "VALUES (?, ?, 'queued', ?, ?)",
                        (uid, study_pseudonym(uid), seen, _now()),
                    )
                elif row[0] == "failed" or (row[0] == "done" and uid in again):
                    db.execute("UPDATE studies SET status = 'queued', updated = ? WHERE study_uid = ?", (_now(), uid))
                else:
                    continue
                queued.append(study_pseudonym(uid))
            db.execute("INSERT OR REPLACE INTO feed (key, value) VALUES ('since', ?)", (str(since),))
        return queued

    def requeue_interrupted(self) -> list[str]:
        """Queue again the studies a crashed or killed node left ``running``; return their pseudonyms."""
        with self._transaction() as db:
            rows = db.execute("SELECT pseudonym FROM studies WHERE status = 'running'").fetchall()
            db.execute("UPDATE studies SET status = 'queued', updated = ? WHERE status = 'running'", (_now(),))
        return [r[0] for r in rows]

    def claim(self) -> Study | None:
        """Mark the oldest queued study ``running`` (one more attempt) and return it; None when none is queued."""
        with self._transaction() as db:
            row = db.execute("SELECT study_uid FROM studies WHERE status = 'queued' ORDER BY seen LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE studies SET status = 'running', attempts = attempts + 1, updated = ? WHERE study_uid = ?",
                (_now(), row[0]),
            )
        return self.study(row[0])

    def finish(
        self,
        study_uid: str,
        status: str,
        reason: str = "",
        record: Mapping[str, Any] | None = None,
        result_uids: Iterable[str] = (),
    ) -> None:
        """Record how a study ended (``done``, ``failed``, or ``queued`` to try it again later)."""
        if status not in STATUSES:
            raise ValueError(f"unknown study status {status!r}")
        with self._transaction() as db:
            db.execute(
                "UPDATE studies SET status = ?, reason = ?, record = ?, result_uids = ?, updated = ? "
                "WHERE study_uid = ?",
                (status, reason, json.dumps(dict(record or {}), sort_keys=True), json.dumps(sorted(result_uids)),
                 _now(), study_uid),
            )
        self.write_report()

    def study(self, study_uid: str) -> Study:
        """The row of one study (raises KeyError when the node has never seen it)."""
        found = self.find(study_uid)
        if found is None:
            raise KeyError("a study this node has never seen")
        return found

    def find(self, study_uid: str) -> Study | None:
        """The row of one study, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        return None if row is None else _study(row)

    def studies(self) -> list[Study]:
        """Every study, in the order the feed named them."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM studies ORDER BY seen").fetchall()
        return [_study(r) for r in rows]

    def count(self, statuses: Iterable[str] = PENDING) -> int:
        """How many studies have one of ``statuses`` (default: queued or running)."""
        wanted = tuple(statuses)
        marks = ",".join("?" * len(wanted))
        with self._lock:
            row = self._db.execute(f"SELECT COUNT(*) FROM studies WHERE status IN ({marks})", wanted).fetchone()
        return int(row[0])

    def write_report(self) -> Path:
        """Write ``STATE/report.json`` (shareable: pseudonyms, statuses, reasons, counts; no UID)."""
        rows = [s.shareable() for s in self.studies()]
        totals = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
        path = self.folder / REPORT_NAME
        write_json_atomic(path, {"studies": rows, "totals": totals, "research_use_only": True})
        return path


_COLUMNS = "study_uid, pseudonym, status, reason, attempts, record, result_uids"


def _study(row: tuple[Any, ...]) -> Study:
    uid, pseudonym, status, reason, attempts, record, results = row
    return Study(uid, pseudonym, status, reason, int(attempts), json.loads(record), tuple(json.loads(results)))
