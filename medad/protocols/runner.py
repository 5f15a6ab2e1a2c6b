"""The resumable protocol runner: data -> train -> score -> evaluate -> stats -> report -> export.

Every stage's output is stored in the stage store (:mod:`medad.protocols.cache`) under a content hash of its
inputs, so a re-run reuses finished work and a run killed at any moment (even ``kill -9``) resumes: training
continues from its last epoch checkpoint, scoring from its last predictions chunk, other stages restart.
The run folder ``<output>/<protocol-name>/<config-hash>/`` then links the stage outputs and holds
``metrics.json`` (a byte copy of the evaluation's), ``protocol.resolved.yaml``, ``provenance.json`` and
``run.log``. The stages themselves live in :mod:`medad.protocols.stages`, one module each.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medad.protocols import provenance
from medad.protocols.cache import StageStore
from medad.protocols.executor import job_device, make_executor
from medad.protocols.loading import LoadedProtocol, load_protocol
from medad.protocols.progress import RunDisplay
from medad.protocols.resolve import ResolvedProtocol, config_hash, resolved_yaml
from medad.protocols.resources import check_output, check_weight_hashes, require_resources
from medad.protocols.stages import data, evaluate, export, report, score, stats, train
from medad.protocols.stages.base import RunState
from medad.protocols.stages.score import study_notes
from medad.utils.io import canonical_json, sha256_file, write_json_atomic, write_text_atomic
from medad.utils.locking import LOCK_NAME, FolderLock
from medad.utils.privacy import PRIVATE, private_dir, redact_paths

STAGES_FOLDER = "_stages"
STAGES: tuple[Callable[[RunState], None], ...] = (data.run, train.run, score.run, evaluate.run, stats.run,
                                                   report.run, export.run)  # fmt: skip
"""The stages in the order they run; each reads what the earlier ones left in the run state."""


def _provenance(state: RunState, started: str) -> dict[str, Any]:
    p = state.resolved
    return {
        "protocol": {
            "name": state.lp.name,
            "file": str(state.lp.path.resolve()),
            "file_sha256": sha256_file(state.lp.path),
            "overrides": list(state.lp.overrides.values()),
            "config_hash": state.config_hash,
        },
        "command": provenance.command_line(),
        "started_at": started,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": provenance.package_versions(),
        "git": provenance.git_state(),
        "device": provenance.device_state(state.device),
        "seeds": {
            "training": p.training.seeds if p.training is not None else [],
            "statistics": p.statistics.seed,
        },
        "data": {
            name: {
                "kind": d.kind,
                "root": str(d.root),
                "n_images": len(d.manifest),
                "content_hash": d.content_hash,
                "manifest": f"data/{name}.manifest.csv",
                "manifest_sha256": sha256_file(state.run_dir / "data" / f"{name}.manifest.csv"),
            }
            for name, d in state.datasets.items()
        },
        "weights": {
            r.label: {
                "protocol": p.models[p.model_index(r.spec.name)].weights.model_dump(mode="json"),
                "card": r.card,
                **({"study": study_notes(r)} if study_notes(r) else {}),  # pinned score epoch, not-zero-shot mark
            }
            for r in state.models
        },
        "leakage": {"intended_overlap": p.intended_overlap, "notes": state.notes},
        "stages": state.stage_keys,
    }


def run_protocol(
    path: str | Path,
    *,
    out: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    wait: bool | float = False,
) -> Path:
    """Run a protocol (resuming any finished or interrupted work) and return its run folder.

    The run holds the lock of its run folder while it runs (and each stage the lock of its stage folder), so a
    second run of the same protocol into the same output folder refuses at once, saying which run holds it
    (``wait``: it waits for that run instead, then reuses its work). A killed run's locks go with its process.

    Args:
        path: the protocol YAML.
        out: output folder replacing the protocol's ``output:``.
        overrides: ``key.path=value`` settings applied to the protocol before validation.
        progress: show the rich progress display on stderr.
        wait: when another run holds the run folder: ``False`` refuse, ``True`` wait, a number: wait at most
            that many seconds.

    Returns:
        ``<output>/<protocol-name>/<config-hash>/``.

    Raises:
        ConfigError: a bad protocol, missing data / weights, or unintended train/target overlap.
        FolderBusyError: another live run holds the run folder (and ``wait`` is off or timed out).
        MedadError: any user-fixable problem raised by the stages.
    """
    lp = load_protocol(path, overrides)
    require_resources(lp, output=out is None)
    resolved = lp.resolved
    check_weight_hashes(lp, resolved)
    chash = config_hash(resolved)
    out_root = check_output(lp, out, resolved)
    run_dir = out_root / lp.name / chash
    lock = FolderLock(
        run_dir / LOCK_NAME,
        f"run folder {run_dir}",
        wait=wait,
        fix="wait for that run to finish (or rerun with --wait: it then reuses that run's work)",
    )
    with lock:
        return _run_locked(lp, resolved, chash, out_root, run_dir, progress)


def _run_locked(
    lp: LoadedProtocol, resolved: ResolvedProtocol, chash: str, out_root: Path, run_dir: Path, progress: bool
) -> Path:
    """The run itself, under the run folder's lock: the stages in order, then the run folder's records."""
    from medad.engine.runtime import resolve_device

    device = resolve_device(None if resolved.device == "auto" else resolved.device)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    display = RunDisplay(run_dir / "run.log", enabled=progress)
    state = RunState(lp, resolved, chash, run_dir, StageStore(out_root / STAGES_FOLDER), display, device)
    state.job_device = job_device(resolved.device, resolved.executor) or str(device)
    if resolved.executor is not None:
        state.executor = make_executor(resolved.executor, out_root / "_submitit")
    write_text_atomic(private_dir(run_dir) / "protocol.resolved.yaml", resolved_yaml(resolved, shareable=False))
    write_text_atomic(run_dir / "protocol.resolved.yaml", resolved_yaml(resolved, shareable=True))
    display.log(f"run {lp.name} {chash} started ({' '.join(redact_paths(provenance.command_line()))})")
    with display:
        for stage in STAGES:
            stage(state)
    assert state.evaluation is not None and state.stats is not None  # the evaluate and stats stages ran
    shutil.copyfile(state.evaluation.folder / "evaluation" / "metrics.json", run_dir / ".metrics.json.tmp")
    os.replace(run_dir / ".metrics.json.tmp", run_dir / "metrics.json")
    summary = (state.stats.folder / "seed_summary.json").read_text(encoding="utf-8")
    write_text_atomic(run_dir / "seed_summary.json", summary)
    write_text_atomic(run_dir / "stages.json", canonical_json(state.stage_keys))
    record = _provenance(state, started)
    write_json_atomic(run_dir / PRIVATE / "provenance.json", record)
    write_json_atomic(run_dir / "provenance.json", provenance.shareable(record))
    display.log(f"run {lp.name} {chash} finished")
    return run_dir
