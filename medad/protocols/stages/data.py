"""The data stage: write the synthetic sources (stored stages), read every dataset's manifest, fingerprint it by
content, write the run's data manifests, and run the content leakage guard and the checks that need the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medad.protocols.manifests import DatasetData, FileHashCache, check_file_overlap, fingerprint, write_data_manifests
from medad.protocols.schema import DatasetSpec
from medad.protocols.stages.base import Advance, RunState, StageTask, ignore, rel_link, run_tasks
from medad.protocols.structure import check_data_settings, dataset_locs
from medad.utils.io import write_json_atomic, write_text_atomic
from medad.utils.privacy import PRIVATE


@dataclass(frozen=True)
class SyntheticJob:
    """Write one synthetic source into its stage folder (``medad.data.write_layout``)."""

    folder: Path
    config: dict[str, Any]

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        from medad.data import write_layout

        write_layout(self.folder / "data", **self.config)
        (advance or ignore)(1)
        return {}


def _synthetic(state: RunState, name: str) -> Path:
    config = state.resolved.synthetic[name].model_dump(mode="json")
    stage = state.store.stage("synthetic", config)
    run_tasks(state, [StageTask(stage, name, 1, config, SyntheticJob(stage.folder, config))])
    return stage.folder / "data"


def _load_dataset(state: RunState, spec: DatasetSpec) -> DatasetData:
    from medad.data import load_manifest

    if spec.synthetic is not None:
        if spec.synthetic not in state.synthetic_dirs:
            state.synthetic_dirs[spec.synthetic] = _synthetic(state, spec.synthetic)
        root = state.synthetic_dirs[spec.synthetic]
    else:
        assert spec.root is not None  # the structure check: exactly one of root / synthetic
        root = Path(spec.root)
    task = state.display.task("data", spec.name, 1)
    options: dict[str, Any] = dict(spec.options)  # load_manifest checks its own keywords
    manifest = load_manifest(root, spec.kind, **options)
    data = fingerprint(spec.name, spec.kind, root, manifest, FileHashCache(state.store.root / PRIVATE / "file_sha256"))
    state.display.finish(task, "data", spec.name, reused=False)
    return data


def run(state: RunState) -> None:
    """Load the targets and training datasets (resolved roots), then check them against the protocol."""
    p = state.resolved
    for _, spec in dataset_locs(p):
        if spec.name not in state.datasets:  # a model's own dataset may repeat one of the protocol's
            state.datasets[spec.name] = _load_dataset(state, spec)
    write_data_manifests(state.run_dir, state.datasets)  # source paths only in private/data/
    for name, folder in state.synthetic_dirs.items():
        rel_link(state.run_dir / "data" / name, folder)
    targets = [state.datasets[d.name] for d in p.targets]
    trained = [(m, t) for m, t in zip(p.models, map(p.training_for, p.models), strict=True) if t is not None]
    checks = {(tuple(d.name for d in t.datasets), p.intended_overlap or m.allow_not_zero_shot) for m, t in trained}
    for names, allowed in sorted(checks):  # a model allowed to be not zero-shot is marked, not refused
        notes = check_file_overlap([state.datasets[n] for n in names], targets, allowed)
        state.notes += [n for n in notes if n not in state.notes]
    if p.intended_overlap and trained:
        state.notes.append("the protocol sets intended_overlap: training data may overlap the targets")
    check_data_settings(state.lp, state.datasets)
    _draw_references(state)


def _draw_references(state: RunState) -> None:
    """Draw every target's references (before any training or scoring), check them against the scored targets
    and record them: case ids in ``private/references.json``, the drawn rows with their paths in
    ``private/references/<target>.csv``."""
    from medad.protocols.references import checked_draws

    records: dict[str, Any] = {}
    for spec in state.resolved.targets:
        if spec.references is None:
            continue
        data = state.datasets[spec.name]
        draws = checked_draws(spec, Path(data.root), data.manifest)
        state.references[spec.name] = draws
        records[spec.name] = draws.record()
        rows = pd.concat([refs.manifest.assign(shots=k, draw=d) for k, d, refs in draws.items()], ignore_index=True)
        write_text_atomic(state.run_dir / PRIVATE / "references" / f"{spec.name}.csv", rows.to_csv(index=False))
    if records:
        write_json_atomic(state.run_dir / PRIVATE / "references.json", records)
