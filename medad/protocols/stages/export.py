"""The export stage: one stored stage per protocol export and model run (``medad.export.export_predictions``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medad.protocols.schema import ExportSpec
from medad.protocols.stages.base import Advance, RunState, StageTask, ignore, rel_link, run_tasks


@dataclass(frozen=True)
class ExportJob:
    """Export one model run's predictions of every target image into the stage folder."""

    folder: Path
    predictions: Path
    manifest: pd.DataFrame
    spec: ExportSpec

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        from medad.export import export_predictions, resolve_threshold

        threshold = resolve_threshold(self.spec.threshold, run_dir=self.predictions, manifest=self.manifest)
        export_predictions(
            self.predictions,
            self.manifest,
            self.folder / "export",
            formats=self.spec.formats,
            threshold=threshold,
            deidentify=self.spec.deidentify,
        )
        (advance or ignore)(1)
        return {"threshold": threshold.to_dict()}


def run(state: RunState) -> None:
    """Run every export of the protocol for the model runs it names (all when it names none)."""
    manifest = state.targets_manifest()
    for i, spec in enumerate(state.resolved.exports):
        for model_run in state.models:
            if spec.models and model_run.spec.name not in spec.models:
                continue
            predictions = state.predictions[model_run.label]
            config = {"formats": spec.formats, "threshold": spec.threshold, "deidentify": spec.deidentify}
            stage = state.store.stage("export", config, upstream=[state.score_keys[model_run.label]])
            job = ExportJob(stage.folder, predictions, manifest, spec)
            run_tasks(state, [StageTask(stage, f"{model_run.label} #{i}", 1, config, job)])
            rel_link(state.run_dir / "exports" / f"{i}-{model_run.label}", stage.folder / "export")
