"""The evaluate stage: metrics with intervals and paired comparisons over every model run's predictions (one
stored stage), and the opt-in epoch sweep (``training.epoch_sweep``, :mod:`medad.protocols.epoch_sweep`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medad.evaluation.fewshot import FewShotRun
from medad.protocols.epoch_sweep import SWEEP_METRICS, SWEEP_NOTE, run_epoch_sweep
from medad.protocols.manifests import DatasetData
from medad.protocols.stages.base import Advance, ModelRun, RunState, StageTask, class_words, ignore, rel_link, run_tasks


@dataclass(frozen=True)
class EpochSweep:
    """Score and evaluate every epoch of every trained model run on the targets (``training.epoch_sweep``)."""

    runs: tuple[ModelRun, ...]
    train_root: Path
    targets: tuple[DatasetData, ...]
    device: str
    batch_size: int
    chunk_size: int
    tile: bool
    tile_overlap: float
    resolution: str

    def __call__(
        self, manifest: pd.DataFrame, evaluated: pd.DataFrame, out: Path, read_mask: Callable[..., Any]
    ) -> None:
        """Sweep into the evaluation folder ``out`` (scoring ``manifest``, evaluating against ``evaluated``)."""
        from medad.engine.scorer import score
        from medad.evaluation import evaluate
        from medad.models import load_checkpoint

        kinds = {t.name: t.kind for t in self.targets}

        def score_epoch(run: ModelRun, checkpoint: Path, folder: Path) -> None:
            model = load_checkpoint(checkpoint, device=self.device, image_score=run.spec.image_score)
            score(model, manifest, folder, batch_size=self.batch_size, device=self.device, compat=run.spec.compat,
                  class_words=class_words(run.spec, self.targets), chunk_size=self.chunk_size, progress=False,
                  tile=self.tile, tile_overlap=self.tile_overlap, dataset_kinds=kinds)  # fmt: skip

        def evaluate_epoch(label: str, predictions: Path, folder: Path) -> list[dict[str, Any]]:
            result = evaluate({label: predictions}, evaluated, folder, metrics=SWEEP_METRICS, ci={"n_resamples": 0},
                              comparisons=None, mask_reader=read_mask, resolution=self.resolution)  # fmt: skip
            return list(result["rows"])

        run_epoch_sweep(self.runs, self.train_root, out, score_epoch, evaluate_epoch)


@dataclass(frozen=True)
class EvaluateJob:
    """The evaluate stage's work: ``medad.evaluation.evaluate`` into the stage folder (and the sweep)."""

    folder: Path
    predictions: Mapping[str, Path]
    manifest: pd.DataFrame
    evaluated: pd.DataFrame
    metrics: Sequence[str]
    ci: Mapping[str, Any]
    comparisons: Sequence[tuple[str, str]]
    correction: str
    resolution: str
    sweep: EpochSweep | None
    volume_score: str = "max"
    fewshot: Mapping[str, FewShotRun] = field(default_factory=dict)
    fewshot_predictions: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        from medad.data import read_mask
        from medad.evaluation import evaluate
        from medad.evaluation.rows import ALL_METRICS

        count = advance or ignore

        def counted_read_mask(row: Any) -> Any:
            mask = read_mask(row)
            count(1)
            return mask

        evaluate(
            {**self.predictions, **self.fewshot_predictions},
            self.evaluated,
            self.folder / "evaluation",
            metrics=list(self.metrics) if self.metrics else ALL_METRICS,
            ci=dict(self.ci),
            comparisons=list(self.comparisons),
            correction=self.correction,
            mask_reader=counted_read_mask,
            resolution=self.resolution,
            volume_score=self.volume_score,
            fewshot=dict(self.fewshot) or None,
            dataset_titles=dict(self.titles),
        )
        if self.sweep is not None:
            self.sweep(self.manifest, self.evaluated, self.folder / "evaluation", read_mask)
        return {}


def comparisons(state: RunState) -> list[tuple[str, str]]:
    """Model pairs to compare: the protocol's pairs, seed by seed where both models were trained per seed; then
    every few-shot run against its own 0-shot run (one family with the protocol's pairs for the correction)."""
    out: list[tuple[str, str]] = []
    for a, b in state.resolved.statistics.comparisons:
        for ra in (r for r in state.models if r.spec.name == a):
            for rb in (r for r in state.models if r.spec.name == b):
                if ra.seed is None or rb.seed is None or ra.seed == rb.seed:
                    out.append((ra.label, rb.label))
    for label, run in state.fewshot.items():
        if run.base in state.predictions:
            out.append((label, run.base))
    return out


def _sweep(state: RunState) -> EpochSweep:
    p = state.resolved
    return EpochSweep(
        runs=tuple(state.models),
        train_root=state.store.root / "train",
        targets=tuple(state.datasets[t.name] for t in p.targets),
        device=state.job_device,
        batch_size=p.scoring.batch_size,
        chunk_size=p.scoring.chunk_size,
        tile=p.scoring.tile,
        tile_overlap=p.scoring.tile_overlap,
        resolution=p.evaluation_resolution,
    )


def run(state: RunState) -> None:
    """Evaluate every model run's predictions on the targets; link ``evaluation/`` into the run folder."""
    from medad.data.registry import dataset_title

    p = state.resolved
    stats = p.statistics
    manifest = state.targets_manifest()
    config: dict[str, Any] = {
        "metrics": p.metrics,
        "statistics": stats.model_dump(mode="json", exclude={"comparisons"}),
        "comparisons": comparisons(state),
        "models": sorted(state.predictions),
    }
    runs = {label: FewShotRun(r.base, r.shots, r.draw) for label, r in sorted(state.fewshot.items())}
    if runs:  # only then: zero-shot stages keep their keys
        config["models"] = sorted([*state.predictions, *runs])
        config["fewshot"] = {label: [r.base, r.shots, r.draw] for label, r in runs.items()}
    if p.evaluation_resolution != "native":  # only then: native stages keep their keys
        config["resolution"] = p.evaluation_resolution
    if p.evaluation_volume_score != "max":  # likewise: the default keeps the stage key
        config["volume_score"] = p.evaluation_volume_score
    sweep = any(t is not None and t.epoch_sweep for t in map(p.training_for, p.models))  # one model's turns it on
    if sweep:  # the released code's selection on the test data, labelled (medad/protocols/epoch_sweep.py)
        config["epoch_sweep"] = True
        state.notes.append(SWEEP_NOTE)
    stage = state.store.stage("evaluate", config, upstream=sorted(state.score_keys.values()))
    evaluated = manifest.copy()
    if stats.unit == "image":
        evaluated["group_id"] = [f"image-{i}" for i in range(len(evaluated))]
    labelled = int(evaluated["label"].notna().sum())
    job = EvaluateJob(
        folder=stage.folder,
        predictions=dict(state.predictions),
        manifest=manifest,
        evaluated=evaluated,
        metrics=list(p.metrics),
        ci={"n_resamples": stats.resamples, "seed": stats.seed, "method": stats.ci, "level": stats.confidence},
        comparisons=config["comparisons"],
        correction=stats.correction,
        resolution=p.evaluation_resolution,
        sweep=_sweep(state) if sweep else None,
        volume_score=p.evaluation_volume_score,
        fewshot=runs,
        titles={t.name: dataset_title(t.kind) for t in p.targets},
        fewshot_predictions={label: dict(r.predictions) for label, r in state.fewshot.items()},
    )
    run_tasks(state, [StageTask(stage, "all targets", labelled, config, job)])
    rel_link(state.run_dir / "evaluation", stage.folder / "evaluation")
    state.evaluation = stage
