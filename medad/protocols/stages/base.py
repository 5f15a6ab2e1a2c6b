"""The one stage type (:class:`StageTask`), the one loop that runs stage tasks (:func:`run_tasks`), and the state
the stages share while a protocol runs (:class:`RunState`).

A task is a stage of the stage store (content-hashed folder) plus its work: a frozen job dataclass called as
``work(advance)`` that returns the stage's ``_done.json`` info. Every task runs under its stage lock: two runs
that need the same stage (two protocols sharing one output folder) never write it at once; the second waits,
then reuses the finished stage. A resumable task whose interrupted output cannot be resumed (``unusable`` names
why) is redone from scratch. Distributable tasks (train, score) go through the protocol's submitit executor
when it has one (:mod:`medad.protocols.executor`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from medad.errors import MedadError
from medad.protocols.cache import Stage, StageStore
from medad.protocols.executor import ERROR_KEY, raise_user_error, run_stage_job
from medad.protocols.loading import LoadedProtocol
from medad.protocols.manifests import DatasetData
from medad.protocols.progress import RunDisplay
from medad.protocols.resolve import ResolvedProtocol
from medad.protocols.schema import ModelSpec

Advance = Callable[[int], None]
"""Counts units of work done (epochs, images) on the progress display."""


class Work(Protocol):
    """A stage's work: called with the progress counter (``None`` in a submitted job), returns its info."""

    def __call__(self, advance: Advance | None) -> dict[str, Any]: ...


def ignore(units: int) -> None:
    """An :data:`Advance` that counts nothing (work run without a display)."""


@dataclass(frozen=True)
class StageTask:
    """One stage instance and its work.

    Attributes:
        stage: the stage (content-hashed folder).
        item: what the progress display and run log call it (a dataset, a model label).
        total: units of progress (epochs, images).
        inputs: what ``_inputs.json`` records (the stage's config).
        work: the frozen job; a distributable one must be picklable by reference.
        resumable: whether an interrupted attempt is continued (else restarted clean).
        unusable: for a resumable stage, ``unusable(folder)`` says why an interrupted attempt's output cannot be
            resumed (``None`` when it can); such a stage is then restarted clean.
        distributable: may run as a submitit job when the protocol has an ``executor:``.
    """

    stage: Stage
    item: str
    total: int | None
    inputs: Any
    work: Work
    resumable: bool = False
    unusable: Callable[[Path], str | None] | None = None
    distributable: bool = False


@dataclass
class ModelRun:
    """One model instance of the study: a model spec with one training seed (or its checkpoint); ``score_epoch``:
    the pinned epoch whose checkpoint it scores with (``None``: the last) of the ``epochs`` trained;
    ``not_zero_shot``: target name -> why its results there are not zero-shot (``"trained on CVC-ColonDB"``)."""

    label: str
    spec: ModelSpec
    seed: int | None
    train_key: str | None = None
    checkpoint: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    score_epoch: int | None = None
    epochs: int | None = None
    not_zero_shot: dict[str, str] = field(default_factory=dict)


@dataclass
class FewShotRun:
    """One few-shot model run: a model run scored with ``shots`` references of draw ``draw``, one predictions
    folder per target that has references."""

    base: str
    shots: int
    draw: int
    predictions: dict[str, Path] = field(default_factory=dict)


@dataclass
class RunState:
    """Everything the stages share while a protocol runs (each stage reads what the earlier ones left)."""

    lp: LoadedProtocol
    resolved: ResolvedProtocol
    config_hash: str
    run_dir: Path
    store: StageStore
    display: RunDisplay
    device: torch.device
    job_device: str = ""
    executor: Any | None = None  # a submitit executor (untyped library)
    datasets: dict[str, DatasetData] = field(default_factory=dict)
    synthetic_dirs: dict[str, Path] = field(default_factory=dict)
    models: list[ModelRun] = field(default_factory=list)
    predictions: dict[str, Path] = field(default_factory=dict)
    score_keys: dict[str, str] = field(default_factory=dict)
    stage_keys: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    manifest: pd.DataFrame | None = None
    references: dict[str, Any] = field(default_factory=dict)  # target -> references.TargetDraws (data stage)
    fewshot: dict[str, FewShotRun] = field(default_factory=dict)  # few-shot label -> its run (score stage)
    evaluation: Stage | None = None
    stats: Stage | None = None

    def targets_manifest(self) -> pd.DataFrame:
        """The scored targets in one manifest (set by the score stage)."""
        if self.manifest is None:
            raise RuntimeError("the score stage has not run yet")
        return self.manifest


def rel_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` with a relative symlink (replacing an old link)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())
    os.replace(tmp, link)


def class_words(spec: ModelSpec, datasets: Sequence[DatasetData]) -> dict[str, str]:
    """A model's class words for these datasets: by kind, then by name (the name wins)."""
    words: dict[str, str] = {}
    for d in datasets:
        words.update(spec.class_words.get(d.kind, {}))
        words.update(spec.class_words.get(d.name, {}))
    return words


def begin_task(task: StageTask, store: StageStore, display: RunDisplay) -> None:
    """Prepare an unfinished task's stage folder: keep what can be resumed, restart clean what cannot."""
    resumable = task.resumable
    if resumable and task.unusable is not None and task.stage.folder.exists():
        problem = task.unusable(task.stage.folder)
        if problem is not None:
            display.log(f"{task.stage.name} {task.item}: an interrupted attempt left {problem}; redoing the stage")
            resumable = False
    store.begin(task.stage, task.inputs, resumable=resumable)


def _run_here(task: StageTask, state: RunState) -> None:
    """Run one task in this process (unless its stage is done), with progress."""
    display = state.display
    bar = display.task(task.stage.name, task.item, task.total)
    with task.stage.lock():
        if task.stage.done:
            display.finish(bar, task.stage.name, task.item, reused=True)
            return
        begin_task(task, state.store, display)
        info = task.work(lambda n: display.advance(bar, task.stage.name, n))
        state.store.finish(task.stage, info)
    display.finish(bar, task.stage.name, task.item, reused=False)


def _submit(tasks: Sequence[StageTask], state: RunState) -> None:
    """Run the tasks as submitit jobs (reusing finished stages), all at once, and wait for them.

    Raises:
        MedadError: a job raised one (re-raised here with the job's name), or a job failed (its log named).
    """
    display, executor = state.display, state.executor
    assert executor is not None  # run_tasks submits only with an executor
    bars = {id(task): display.task(task.stage.name, task.item, task.total) for task in tasks}
    pending = [task for task in tasks if not task.stage.done]
    for task in tasks:
        if task.stage.done:
            display.finish(bars[id(task)], task.stage.name, task.item, reused=True)
    for task in pending:
        with task.stage.lock():  # not held while the job runs: the job takes it itself
            begin_task(task, state.store, display)
    submitted = []
    if pending:
        with executor.batch():  # one SLURM job array
            submitted = [
                executor.submit(run_stage_job, str(state.store.root), task.stage.name, task.stage.key, task.work)
                for task in pending
            ]
    for task, sub in zip(pending, submitted, strict=True):
        display.log(f"{task.stage.name} {task.item}: submitted as job {sub.job_id}")
    failures: list[tuple[StageTask, Any, list[str] | None]] = []
    for task, sub in zip(pending, submitted, strict=True):
        try:
            record = sub.result()
        except Exception:  # submitit's FailedJobError / UncompletedJobError: the log says why
            failures.append((task, sub, None))
            continue
        if ERROR_KEY in record:
            failures.append((task, sub, record[ERROR_KEY]))
            continue
        display.finish(bars[id(task)], task.stage.name, task.item, reused=False)
    if failures:
        task, sub, user_error = failures[0]
        more = f" ({len(failures) - 1} more job(s) failed)" if len(failures) > 1 else ""
        if user_error is not None:
            raise_user_error(user_error[0], f"{user_error[1]}{more}", f"{task.stage.name} {task.item}")
        raise MedadError(
            f"{task.stage.name} {task.item}: submitit job {sub.job_id} failed{more}; its log is "
            f"{sub.paths.stderr} (finished stages are kept; `medad run` again resumes)"
        )


def run_tasks(state: RunState, tasks: Sequence[StageTask]) -> list[dict[str, Any]]:
    """Run the tasks of one stage (reusing finished ones) and return each one's ``_done.json`` record, in order.

    Distributable tasks go through the protocol's executor when it has one; all others run in this process,
    one after the other. Every task's key is recorded in ``state.stage_keys`` (for provenance).
    """
    for task in tasks:
        state.stage_keys[f"{task.stage.name}/{task.item}"] = task.stage.key
    if state.executor is not None and all(task.distributable for task in tasks):
        _submit(tasks, state)
    else:
        for task in tasks:
            _run_here(task, state)
    return [task.stage.record() for task in tasks]


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """What a model's stage keys hash of its resolved spec: registry name, compat, options and weights."""
    return spec.model_dump(mode="json", include={"model", "compat", "options", "weights"})
