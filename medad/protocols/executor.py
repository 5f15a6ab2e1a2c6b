"""Fan a protocol's independent jobs out through submitit: ``executor: {kind: local | slurm, ...}``.

Train stages (model x seed) and score stages (model run) are distributable: their work is a frozen job
dataclass (picklable by reference). Without an executor the stage loop (:func:`medad.protocols.stages.base.
run_tasks`) runs them in-process, one after the other. With one, it prepares the stage folders, submits every
unfinished job at once (a SLURM job array, or LocalExecutor subprocesses) through :func:`run_stage_job`, and
waits. Each job runs the same work into the same content-hashed stage folder and writes the stage's
``_done.json`` itself, so a job that finishes after the runner was killed is reused by the next run, and an
interrupted one resumes (epochs, prediction chunks).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medad import errors
from medad.errors import ConfigError, MedadError
from medad.protocols.cache import Stage, StageStore
from medad.protocols.schema import ExecutorSpec

ERROR_KEY = "__medad_error__"
SLURM_KEYS = ("partition", "account", "qos", "constraint", "array_parallelism")


def job_device(device: str, executor: ExecutorSpec | None) -> str | None:
    """The device the fanned-out jobs use: the protocol's unless ``auto``; then CUDA iff the jobs get GPUs.

    ``None`` (no executor) means: the runner's own device.
    """
    if executor is None:
        return None
    if device != "auto":
        return device.split(":")[0]
    return "cuda" if executor.gpus_per_node > 0 else "cpu"


def executor_parameters(spec: ExecutorSpec) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for a resolved ``executor:`` section."""
    params: dict[str, Any] = {
        "timeout_min": spec.timeout_min,
        "gpus_per_node": spec.gpus_per_node,
        "name": spec.job_name,
        "nodes": 1,
        "tasks_per_node": 1,
    }
    if spec.cpus_per_task is not None:
        params["cpus_per_task"] = spec.cpus_per_task
    if spec.mem_gb is not None:
        params["mem_gb"] = spec.mem_gb
    if spec.kind == "local":
        if spec.setup:
            params["local_setup"] = list(spec.setup)
        return params
    for key in SLURM_KEYS:
        if getattr(spec, key) is not None:
            params[f"slurm_{key}"] = getattr(spec, key)
    if spec.setup:
        params["slurm_setup"] = list(spec.setup)
    if spec.slurm_additional_parameters:
        params["slurm_additional_parameters"] = dict(spec.slurm_additional_parameters)
    return params


def make_executor(spec: ExecutorSpec, default_folder: Path) -> Any:
    """A submitit ``AutoExecutor`` for the resolved ``executor:`` section (``Any``: submitit is untyped).

    Raises:
        ConfigError: submitit is not installed, or a SLURM executor is asked for off a SLURM node.
    """
    try:
        import submitit
    except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
        raise ConfigError(
            "the protocol has an `executor:` section but submitit is missing; pip install 'medad[cluster]'"
        ) from exc
    folder = Path(spec.folder) if spec.folder else default_folder
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=spec.kind)
    except RuntimeError as exc:  # no srun: not a SLURM node
        raise ConfigError(
            f"executor kind {spec.kind!r}: {exc}; run `medad run` on the cluster's login node, or use "
            "--set executor.kind=local to run the jobs on this machine"
        ) from exc
    executor.update_parameters(**executor_parameters(spec))
    return executor


def run_stage_job(
    store_root: str, stage_name: str, stage_key: str, work: Callable[[Callable[[int], None] | None], dict[str, Any]]
) -> dict[str, Any]:
    """What a submitted job runs: the stage's work (without progress), then its ``_done.json``.

    A :class:`~medad.errors.MedadError` (a user-fixable problem) comes back as data, so the runner can raise it
    as the same one-line error; anything else fails the job with its traceback in the submitit log.
    """
    stage = Stage(stage_name, stage_key, Path(store_root) / stage_name / stage_key)
    with stage.lock():
        if stage.done:  # another run finished it while this job waited for the lock
            return stage.record()
        try:
            info = work(None)
        except MedadError as exc:
            return {ERROR_KEY: [type(exc).__name__, str(exc), traceback.format_exc(limit=3)]}
        StageStore(store_root).finish(stage, info)
    return stage.record()


def raise_user_error(name: str, message: str, item: str) -> None:
    """Raise a job's user-fixable error in the runner as the same :class:`MedadError` subclass."""
    cls = getattr(errors, name, MedadError)
    if not (isinstance(cls, type) and issubclass(cls, MedadError)):
        cls = MedadError
    raise cls(f"{item}: {message}")
