"""The AI node's loop: follow the feed, queue stable studies, score them with bounded concurrency, record each.

``run_node(settings)`` takes the state folder's lock, queues again any study a killed node left running, checks
the source and the ``--to`` destination (a DICOMweb root or a ``dicom://`` peer), builds the model once, then
loops: read the feed (at most ``queue`` studies waiting), hand queued studies to at most ``workers`` threads
(scoring itself runs one study at a time), and record how each ended. ``once`` processes what is pending and
returns; otherwise the loop polls every ``poll`` seconds until SIGTERM / SIGINT, which stop it after the studies in
progress.

Logs name a study by its keyed pseudonym only; patient-linked UIDs stay in the state folder's ``private/`` part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd

from medad.dicomweb import DicomWebError
from medad.dimse import DimseError
from medad.dimse.remote import check_target
from medad.engine.scorer import load_model, weights_fingerprint, weights_options
from medad.errors import MedadError
from medad.export import resolve_threshold
from medad.export.thresholds import Threshold
from medad.utils.locking import FolderLock
from medad.watch.feed import STABLE_STUDY, OrthancFeed
from medad.watch.settings import WatchError, WatchSettings
from medad.watch.state import Study, WatchState
from medad.watch.study import Scorer, StudyRejectedError, image_instances, process_study
from medad.watch.uids import fingerprint

log = logging.getLogger("medad.watch")

MAX_ATTEMPTS = 3
"""Attempts of a study whose server keeps failing before it is recorded as failed."""
ERRORS_LOG = "errors.log"


@dataclasses.dataclass
class Outcome:
    """How one attempt at a study ended: ``done``, ``failed`` or ``queued`` (the server failed: try again)."""

    status: str
    reason: str = ""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    result_uids: list[str] = dataclasses.field(default_factory=list)
    error: MedadError | None = None


@dataclasses.dataclass
class NodeSummary:
    """What one run of the node did: studies done, failed and left queued, and where the record is."""

    done: int = 0
    failed: int = 0
    queued: int = 0
    report: Path | None = None

    def describe(self) -> str:
        """One line for the CLI."""
        return (
            f"medad watch: {self.done} done, {self.failed} failed, {self.queued} still queued in this run; "
            f"per-study record in {self.report}"
        )


def node_settings_fingerprint(
    settings: WatchSettings, threshold: Threshold, card: dict[str, Any], weights_sha256: str
) -> str:
    """The fingerprint the result UIDs derive from: model card, trainable weights and what shapes the results."""
    s = settings.score
    shaping = {
        "threshold": [threshold.rule, threshold.value],
        "compat": s.compat,
        "class_word": s.class_word,
        "tile": s.tile,
        "tile_overlap": s.tile_overlap if s.tile else None,
        "seed": s.seed,
    }
    return fingerprint(card, weights_sha256, shaping)


class Node:
    """One ``medad watch`` process (see the module docstring)."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.summary = NodeSummary()
        self._halt: MedadError | None = None
        self._pause_until = 0.0
        self._recheck: set[str] = set()

    def run(self) -> NodeSummary:
        """Run until the feed is drained (``once``) or a stop signal; return what was done."""
        s = self.settings
        s.check()
        check_target(s.formats, False, s.to, s.connection)
        lock = FolderLock(
            s.state_dir / ".medad.lock",
            f"--state folder {s.state_dir}",
            fix="stop the other `medad watch` that uses this state folder, or give another --state",
        )
        with lock, self._signals():
            self.state = WatchState(s.state_dir)
            try:
                self._start()
                self._loop()
            finally:
                self.summary.report = self.state.write_report()
                self.summary.queued = self.state.count()
                self.state.close()
        if self._halt is not None:
            raise self._halt
        return self.summary

    def _start(self) -> None:
        """Requeue studies a killed node left running, check both servers, place the feed, build the model."""
        s = self.settings
        for pseudonym in self.state.requeue_interrupted():
            log.info("%s: was running when the node stopped; queued again", pseudonym)
        self.feed = OrthancFeed(s.source, s.ca_bundle)
        newest = self.feed.last()
        check_target(s.formats, False, s.to, s.connection, probe=True, before="watching")
        if self.state.since() is None:
            self.state.advance(0 if s.backlog else newest)
            log.info("following %s from %s", self.feed.server, "its first change" if s.backlog else "now")
        seed = 0 if s.score.seed is None else s.score.seed
        weights = weights_options(s.backbone_weights, s.text_weights)
        model = load_model(s.checkpoint, s.model_name, s.score.device, seed=seed, compat=s.score.compat, **weights)
        threshold = resolve_threshold(s.threshold, run_dir=s.state_dir, manifest=pd.DataFrame())  # no in-sample rule
        self.scorer = Scorer(model, s.score.replace(seed=seed), threshold)
        self.fingerprint = node_settings_fingerprint(s, threshold, model.card(), weights_fingerprint(model))

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT set the stop flag (the studies in progress finish); restored afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            if not self.stop.is_set():
                log.info("%s: stopping after the studies in progress", signal.Signals(signum).name)
            self.stop.set()

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, previous in old.items():
                signal.signal(sig, previous)

    def _loop(self) -> None:
        """Read the feed, start studies, collect the finished ones, until done or stopped."""
        s = self.settings
        active: dict[Future[Outcome], Study] = {}
        feed_done, next_read = False, 0.0
        with ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="medad-watch") as pool:
            while True:
                if not self._stopping() and time.monotonic() >= next_read:
                    feed_done = self._read_feed()
                    next_read = time.monotonic() + (0.0 if s.once else s.poll)
                self._start_studies(pool, active)
                drained = feed_done and self.state.count(("queued",)) == 0
                if not active and (self._stopping() or (s.once and drained)):
                    return
                if not active:  # idle: wait for the next read (a stop signal wakes it)
                    self.stop.wait(min(s.poll, 1.0))
                    continue
                finished, _ = wait(active, timeout=min(s.poll, 1.0), return_when=FIRST_COMPLETED)
                for future in finished:
                    self._record(active.pop(future), future.result())

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._halt is not None

    def _start_studies(self, pool: ThreadPoolExecutor, active: dict[Future[Outcome], Study]) -> None:
        while not self._stopping() and len(active) < self.settings.workers and time.monotonic() >= self._pause_until:
            study = self.state.claim()
            if study is None:
                return
            log.info("%s: scoring (attempt %d)", study.pseudonym, study.attempts)
            active[pool.submit(self._attempt, study.study_uid, study.pseudonym)] = study

    def _read_feed(self) -> bool:
        """Queue the studies that became stable, keeping at most ``queue`` waiting; True when the feed is drained.

        In ``once`` mode a source that does not answer ends the run (nothing is lost); otherwise it is logged and
        tried again at the next poll.
        """
        try:
            return self._read_pages()
        except (DicomWebError, WatchError) as exc:
            if self.settings.once:
                self._halt = exc
            else:
                log.warning("the source did not answer (%s); trying again in %g s", exc, self.settings.poll)
            return False

    def _read_pages(self) -> bool:
        bound = self.settings.queue
        while True:
            since = self.state.since() or 0
            page = self.feed.read(since)
            uids: list[str] = []
            position = since
            for change in page.changes:
                if change.kind == STABLE_STUDY:
                    if self.state.count() + len(uids) >= bound:
                        self._queue(position, uids)
                        return False
                    uid = self.feed.study_uid(change.resource_id)
                    if uid:
                        uids.append(uid)
                position = change.seq
            self._queue(max(position, page.last) if page.done else position, uids)
            if page.done or not page.changes:
                return True

    def _queue(self, position: int, uids: list[str]) -> None:
        for pseudonym in self.state.advance(position, uids, self._renewed(uids)):
            log.info("%s: stable; queued", pseudonym)

    def _renewed(self, uids: list[str]) -> list[str]:
        """The done studies among ``uids`` that now hold images the node did not score (late images); a running
        one is checked when it ends. A study re-reported stable because medad's own results arrived is not."""
        renewed = []
        for uid in uids:
            known = self.state.find(uid)
            if known is not None and known.status == "running":
                self._recheck.add(uid)
            elif known is not None and known.status == "done" and self._new_images(known):
                renewed.append(uid)
        return renewed

    def _new_images(self, study: Study) -> bool:
        return image_instances(self.settings, study.study_uid) > int(study.record.get("instances", 0))

    def _work_folder(self, pseudonym: str) -> Path:
        return self.state.private / "work" / pseudonym

    def _attempt(self, study_uid: str, pseudonym: str) -> Outcome:
        """One attempt at a study, in a worker thread; never raises."""
        work = self._work_folder(pseudonym)
        try:
            record, uids = process_study(self.settings, self.scorer, self.fingerprint, study_uid, work)
            return Outcome("done", record=record, result_uids=uids)
        except StudyRejectedError as exc:
            return Outcome("failed", reason=str(exc))
        except (DicomWebError, DimseError) as exc:
            return Outcome("queued", reason=f"server: {exc}", error=exc)
        except MedadError as exc:
            return Outcome("failed", reason=str(exc))
        except Exception as exc:  # a bug must not stop the node: recorded, traceback kept in private/errors.log
            with (self.state.private / ERRORS_LOG).open("a", encoding="utf-8") as out:
                out.write(f"{pseudonym}\n{traceback.format_exc()}\n")
            return Outcome("failed", reason=f"internal error ({type(exc).__name__}); see private/{ERRORS_LOG}")

    def _record(self, study: Study, outcome: Outcome) -> None:
        """Store an attempt's outcome; a server failure is tried again later (``MAX_ATTEMPTS`` in all)."""
        s = self.settings
        status = outcome.status
        if status == "queued" and (s.once or study.attempts >= MAX_ATTEMPTS):
            status = "queued" if s.once else "failed"
            if s.once and self._halt is None:
                self._halt = outcome.error
        elif status == "queued":
            self._pause_until = time.monotonic() + s.poll
        self.state.finish(study.study_uid, status, outcome.reason, outcome.record, outcome.result_uids)
        if status == "done":
            self.summary.done += 1
            log.info("%s: done; %d result object(s) stored, %d already there", study.pseudonym,
                     outcome.record.get("stored", 0), outcome.record.get("already_stored", 0))
        elif status == "failed":
            self.summary.failed += 1
            log.info("%s: failed: %s", study.pseudonym, outcome.reason)
        else:
            log.warning("%s: %s; it stays queued", study.pseudonym, outcome.reason)
        if status != "queued":
            shutil.rmtree(self._work_folder(study.pseudonym), ignore_errors=True)
        if status == "done" and study.study_uid in self._recheck:  # reported stable again while it ran
            self._recheck.discard(study.study_uid)
            try:
                self._queue(self.state.since() or 0, [study.study_uid])
            except MedadError as exc:
                log.warning("%s: cannot check it for late images (%s)", study.pseudonym, exc)


def run_node(settings: WatchSettings) -> NodeSummary:
    """Run a ``medad watch`` node (what the command runs); see :class:`Node`."""
    return Node(settings).run()
