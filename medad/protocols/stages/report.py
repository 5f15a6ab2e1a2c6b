"""The report stage: the HTML report of the evaluation (``medad.reports.build_report``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medad.protocols.stages.base import Advance, RunState, StageTask, ignore, rel_link, run_tasks


@dataclass(frozen=True)
class ReportJob:
    """Build the report of an evaluation folder into the stage folder."""

    folder: Path
    evaluation: Path
    predictions: Mapping[str, Path]
    manifest: pd.DataFrame
    title: str

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        from medad.reports import build_report

        build_report(
            self.evaluation,
            self.folder / "report",
            predictions=dict(self.predictions),
            manifest=self.manifest,
            title=self.title,
        )
        (advance or ignore)(1)
        return {}


def run(state: RunState) -> None:
    """Report the evaluation (its title says when training data intentionally overlaps the targets)."""
    assert state.evaluation is not None  # the evaluate stage ran
    p = state.resolved
    title = f"medad protocol {state.lp.name}"
    if p.intended_overlap:
        title += " (training data intentionally overlaps the targets: not zero-shot; see provenance.json)"
    config = {"title": title, "notes": state.notes, "description": p.description}
    stage = state.store.stage("report", config, upstream=[state.evaluation.key])
    job = ReportJob(
        stage.folder, state.evaluation.folder / "evaluation", dict(state.predictions), state.targets_manifest(), title
    )
    run_tasks(state, [StageTask(stage, "report", 1, config, job)])
    rel_link(state.run_dir / "report", stage.folder / "report")
