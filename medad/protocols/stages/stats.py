"""The stats stage: mean, sample SD, min and max of every metric over the training seeds of each model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medad.protocols.stages.base import Advance, ModelRun, RunState, StageTask, ignore, run_tasks
from medad.utils.io import write_json_atomic


def seed_summary(rows: Sequence[Mapping[str, Any]], runs: Sequence[ModelRun]) -> list[dict[str, Any]]:
    """Mean, sample SD, min and max of each metric over the training seeds of each model."""
    by_label = {r.label: r for r in runs}
    groups: dict[tuple[str, str, str, str], list[float]] = {}
    for row in rows:
        run = by_label.get(str(row["model"]))
        if run is None or row.get("value") is None:
            continue
        key = (run.spec.name, str(row["dataset"]), str(row["class_name"]), str(row["metric"]))
        groups.setdefault(key, []).append(float(row["value"]))
    out = []
    for (model, dataset, class_name, metric), values in sorted(groups.items()):
        n = len(values)
        mean = sum(values) / n
        sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
        out.append(
            {
                "model": model,
                "dataset": dataset,
                "class_name": class_name,
                "metric": metric,
                "n_seeds": n,
                "mean": float(f"{mean:.10g}"),
                "sd": None if sd is None else float(f"{sd:.10g}"),
                "min": min(values),
                "max": max(values),
            }
        )
    return out


@dataclass(frozen=True)
class StatsJob:
    """Write ``seed_summary.json`` from the evaluation's ``metrics.json``."""

    folder: Path
    metrics_file: Path
    labels: Mapping[str, Mapping[str, Any]]
    runs: tuple[ModelRun, ...]

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        metrics = json.loads(self.metrics_file.read_text(encoding="utf-8"))
        summary = {"models": dict(self.labels), "rows": seed_summary(metrics["rows"], self.runs)}
        write_json_atomic(self.folder / "seed_summary.json", summary)
        (advance or ignore)(1)
        return {}


def run(state: RunState) -> None:
    """Summarise the evaluation over training seeds."""
    assert state.evaluation is not None  # the evaluate stage ran
    labels = {r.label: {"model": r.spec.name, "seed": r.seed} for r in state.models}
    stage = state.store.stage("stats", {"labels": labels}, upstream=[state.evaluation.key])
    metrics_file = state.evaluation.folder / "evaluation" / "metrics.json"
    job = StatsJob(stage.folder, metrics_file, labels, tuple(state.models))
    run_tasks(state, [StageTask(stage, "seeds", 1, {"labels": labels}, job)])
    state.stats = stage
