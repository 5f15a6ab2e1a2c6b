"""Fan a protocol's independent jobs out through submitit: ``executor: {kind: local | slurm, ...}``.

The runner turns each train stage (model x seed) and each score stage (model run) into a :class:`Job`: a
module-level function plus picklable arguments. Without an executor it runs them in-process, one after the
other, exactly as before. With one, :func:`run_jobs` prepares the stage folders, submits every unfinished job
at once (a SLURM job array, or LocalExecutor subprocesses), and waits. Each job runs the same function into the
same content-hashed stage folder and writes the stage's ``_done.json`` itself, so a job that finishes after
the runner was killed is reused by the next run, and an interrupted one resumes (epochs, prediction chunks).

Every stage runs under its stage lock (:func:`stage_lock`): two runs that need the same stage (two protocols
sharing one output folder) never write it at once; the second waits, then reuses the finished stage. A
resumable stage whose interrupted output cannot be resumed (``Job.unusable`` names why) is redone from scratch.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medad import errors
from medad.errors import ConfigError, MedadError
from medad.protocols.cache import Stage, StageStore
from medad.utils.locking import FolderLock

_ERROR_KEY = "__medad_error__"
SLURM_KEYS = ("partition", "account", "qos", "constraint", "array_parallelism")


@dataclass
class Job:
    """One stage's work: ``fn(args, advance)`` returns the stage's ``_done.json`` info.

    Attributes:
        stage: the stage (content-hashed folder).
        item: what the progress display and run log call it (a model label).
        total: units of progress (epochs, images).
        inputs: what ``_inputs.json`` records.
        fn: a module-level function (picklable by reference), called as ``fn(args, advance)``.
        args: its picklable arguments (the stage folder under ``"folder"``).
        resumable: whether an interrupted attempt is continued (else restarted clean).
        unusable: for a resumable stage, ``unusable(folder)`` says why an interrupted attempt's output cannot be
            resumed (``None`` when it can); such a stage is then restarted clean.
    """

    stage: Stage
    item: str
    total: int | None
    inputs: Any
    fn: Callable[[dict[str, Any], Callable[[int], None] | None], dict[str, Any]]
    args: dict[str, Any]
    resumable: bool = True
    unusable: Callable[[Path], str | None] | None = None


def stage_lock(stage: Stage) -> FolderLock:
    """The lock of a stage folder, waited for (the run that holds it is doing the work this one needs).

    Its file is ``<store>/.locks/<stage>-<key>.lock``: outside the stage folder, which a non-resumable stage
    deletes and remakes, and outside ``<store>/<stage>/``, which holds only stage folders.
    """
    lock_file = stage.folder.parent.parent / ".locks" / f"{stage.name}-{stage.key}.lock"
    return FolderLock(lock_file, f"stage folder {stage.name}/{stage.key}", wait=True)


def begin_job(job: Job, store: StageStore, display: Any) -> None:
    """Prepare an unfinished job's stage folder: keep what can be resumed, restart clean what cannot."""
    resumable = job.resumable
    if resumable and job.unusable is not None and job.stage.folder.exists():
        problem = job.unusable(job.stage.folder)
        if problem is not None:
            display.log(f"{job.stage.name} {job.item}: an interrupted attempt left {problem}; redoing the stage")
            resumable = False
    store.begin(job.stage, job.inputs, resumable=resumable)


def job_device(device: str, executor: Mapping[str, Any] | None) -> str | None:
    """The device the fanned-out jobs use: the protocol's unless ``auto``; then CUDA iff the jobs get GPUs.

    ``None`` (no executor) means: the runner's own device.
    """
    if executor is None:
        return None
    if device != "auto":
        return device.split(":")[0]
    return "cuda" if executor["gpus_per_node"] > 0 else "cpu"


def executor_parameters(spec: Mapping[str, Any]) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for a resolved ``executor:`` section."""
    params: dict[str, Any] = {
        "timeout_min": spec["timeout_min"],
        "gpus_per_node": spec["gpus_per_node"],
        "name": spec["job_name"],
        "nodes": 1,
        "tasks_per_node": 1,
    }
    if spec["cpus_per_task"] is not None:
        params["cpus_per_task"] = spec["cpus_per_task"]
    if spec["mem_gb"] is not None:
        params["mem_gb"] = spec["mem_gb"]
    if spec["kind"] == "local":
        if spec["setup"]:
            params["local_setup"] = list(spec["setup"])
        return params
    for key in SLURM_KEYS:
        if spec[key] is not None:
            params[f"slurm_{key}"] = spec[key]
    if spec["setup"]:
        params["slurm_setup"] = list(spec["setup"])
    if spec["slurm_additional_parameters"]:
        params["slurm_additional_parameters"] = dict(spec["slurm_additional_parameters"])
    return params


def make_executor(spec: Mapping[str, Any], default_folder: Path) -> Any:
    """A submitit ``AutoExecutor`` for the resolved ``executor:`` section.

    Raises:
        ConfigError: submitit is not installed.
    """
    try:
        import submitit
    except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
        raise ConfigError(
            "the protocol has an `executor:` section but submitit is missing; pip install 'medad[cluster]'"
        ) from exc
    folder = Path(spec["folder"]) if spec["folder"] else default_folder
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=spec["kind"])
    except RuntimeError as exc:  # no srun: not a SLURM node
        raise ConfigError(
            f"executor kind {spec['kind']!r}: {exc}; run `medad run` on the cluster's login node, or use "
            "--set executor.kind=local to run the jobs on this machine"
        ) from exc
    executor.update_parameters(**executor_parameters(spec))
    return executor


def run_stage_job(
    store_root: str, stage_name: str, stage_key: str, fn: Callable[..., dict[str, Any]], args: dict[str, Any]
) -> dict[str, Any]:
    """What a submitted job runs: the stage's work, then its ``_done.json``.

    A :class:`~medad.errors.MedadError` (a user-fixable problem) comes back as data, so the runner can raise it
    as the same one-line error; anything else fails the job with its traceback in the submitit log.
    """
    stage = Stage(stage_name, stage_key, Path(store_root) / stage_name / stage_key)
    with stage_lock(stage):
        if stage.done:  # another run finished it while this job waited for the lock
            return stage.record()
        try:
            info = fn(args, None)
        except MedadError as exc:
            return {_ERROR_KEY: [type(exc).__name__, str(exc), traceback.format_exc(limit=3)]}
        StageStore(store_root).finish(stage, info)
    return stage.record()


def _raise_user_error(name: str, message: str, item: str) -> None:
    cls = getattr(errors, name, MedadError)
    if not (isinstance(cls, type) and issubclass(cls, MedadError)):
        cls = MedadError
    raise cls(f"{item}: {message}")


def run_jobs(
    jobs: list[Job],
    store: StageStore,
    display: Any,
    stage_keys: dict[str, str],
    executor: Any | None,
) -> list[dict[str, Any]]:
    """Run the jobs (reusing finished stages) and return each one's ``_done.json`` record, in order.

    Args:
        jobs: the jobs of one phase (all train jobs, or all score jobs).
        store: the stage store.
        display: the run's progress display and log.
        stage_keys: ``stage/item -> key``, filled in for provenance.
        executor: a submitit executor, or ``None`` to run in-process one after the other.

    Raises:
        MedadError: a job raised one (re-raised here with the job's name), or a job failed (its log named).
    """
    tasks = {}
    for job in jobs:
        stage_keys[f"{job.stage.name}/{job.item}"] = job.stage.key
        if executor is None:
            task = display.task(job.stage.name, job.item, job.total)
            with stage_lock(job.stage):
                if job.stage.done:
                    display.finish(task, job.stage.name, job.item, reused=True)
                    continue
                begin_job(job, store, display)
                info = job.fn(job.args, lambda n, t=task, s=job.stage.name: display.advance(t, s, n))
                store.finish(job.stage, info)
            display.finish(task, job.stage.name, job.item, reused=False)
            continue
        tasks[id(job)] = display.task(job.stage.name, job.item, job.total)
    if executor is not None:
        pending = [job for job in jobs if not job.stage.done]
        for job in jobs:
            if job.stage.done:
                display.finish(tasks[id(job)], job.stage.name, job.item, reused=True)
        for job in pending:
            with stage_lock(job.stage):  # not held while the job runs: the job takes it itself
                begin_job(job, store, display)
        submitted = []
        if pending:
            with executor.batch():  # one SLURM job array
                submitted = [
                    executor.submit(run_stage_job, str(store.root), job.stage.name, job.stage.key, job.fn, job.args)
                    for job in pending
                ]
        failures: list[tuple[Job, Any, list[str] | None]] = []
        for job, sub in zip(pending, submitted, strict=True):
            display.log(f"{job.stage.name} {job.item}: submitted as job {sub.job_id}")
        for job, sub in zip(pending, submitted, strict=True):
            try:
                record = sub.result()
            except Exception:  # submitit's FailedJobError / UncompletedJobError: the log says why
                failures.append((job, sub, None))
                continue
            if _ERROR_KEY in record:
                failures.append((job, sub, record[_ERROR_KEY]))
                continue
            display.finish(tasks[id(job)], job.stage.name, job.item, reused=False)
        if failures:
            job, sub, user_error = failures[0]
            more = f" ({len(failures) - 1} more job(s) failed)" if len(failures) > 1 else ""
            if user_error is not None:
                _raise_user_error(user_error[0], f"{user_error[1]}{more}", f"{job.stage.name} {job.item}")
            raise MedadError(
                f"{job.stage.name} {job.item}: submitit job {sub.job_id} failed{more}; its log is "
                f"{sub.paths.stderr} (finished stages are kept; `medad run` again resumes)"
            )
    return [job.stage.record() for job in jobs]
