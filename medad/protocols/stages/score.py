"""The score stage: one stored, resumable (by predictions chunk), distributable stage per model run, scoring
every target image; then the run's targets manifest (``private/manifest.csv``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medad.engine.request import DEFAULT_SEED, ScoreSettings
from medad.protocols.stages.base import (
    Advance,
    ModelRun,
    RunState,
    StageTask,
    class_words,
    model_config,
    rel_link,
    run_tasks,
)
from medad.utils.io import write_text_atomic
from medad.utils.privacy import PRIVATE


@dataclass(frozen=True)
class ScoreJob:
    """One score stage (model run): load its checkpoint (or build a training-free model) under the run's seed and
    score every target image into the stage folder, with the typed scoring settings ``medad score`` also uses."""

    folder: Path
    checkpoint: Path | None
    model: str
    create_kwargs: Mapping[str, Any]
    image_score: str
    manifest: pd.DataFrame
    settings: ScoreSettings
    study: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        from medad.engine.runtime import resolve_device
        from medad.engine.scorer import score
        from medad.models import create_model, load_checkpoint
        from medad.models.weights import seeded

        seed = DEFAULT_SEED if self.settings.seed is None else self.settings.seed
        device = str(resolve_device(self.settings.device))
        if self.checkpoint is None:  # training-free model (no adapters): build it from the protocol's settings
            model = seeded(lambda: create_model(self.model, **self.create_kwargs), seed)
        else:
            ckpt = str(self.checkpoint)
            model = seeded(lambda: load_checkpoint(ckpt, device=device, image_score=self.image_score), seed)
        model.study = dict(self.study)  # recorded in the predictions' card (meta.json), read by the paper view
        score(model, self.manifest, self.folder / "predictions", self.settings, progress=advance or False)
        if self.checkpoint is None:
            return {"n_images": len(self.manifest), "card": model.card()}
        return {"n_images": len(self.manifest)}


def unusable_predictions(folder: Path) -> str | None:
    """Why an interrupted score stage's predictions cannot be resumed (e.g. an index written twice by two
    runs that scored into one folder at once before runs were locked), or ``None``."""
    import zipfile

    from medad.engine.predictions import PredictionReader
    from medad.errors import DataError

    predictions = folder / "predictions"
    if not (predictions / "chunks").is_dir():
        return None
    try:
        PredictionReader(predictions)
    except (DataError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        return f"predictions that cannot be read back ({type(exc).__name__}: {str(exc).replace(str(folder), '')})"
    return None


def study_notes(run: ModelRun) -> dict[str, Any]:
    """What the study records of a model run in its predictions' card: the pinned score epoch (with the epochs
    trained) and the not-zero-shot mark (``{}`` for neither)."""
    notes: dict[str, Any] = {}
    if run.score_epoch is not None:
        notes["score_epoch"] = run.score_epoch
        notes["epochs"] = run.epochs
    if run.not_zero_shot:
        notes["not_zero_shot"] = run.not_zero_shot
    return notes


def _targets_manifest(state: RunState) -> pd.DataFrame:
    """All targets in one manifest (``dataset`` = the target's protocol name; row position = index)."""
    frames = []
    for target in state.resolved.targets:
        frame = state.datasets[target.name].manifest.copy()
        frame["dataset"] = target.name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _task(state: RunState, run: ModelRun, manifest: pd.DataFrame) -> StageTask:
    """The score task of one model run."""
    p = state.resolved
    targets = [state.datasets[t.name] for t in p.targets]
    spec = p.models[p.model_index(run.spec.name)]
    words = class_words(run.spec, targets)
    config: dict[str, Any] = {
        "model": model_config(spec),
        "image_score": run.spec.image_score,
        "class_words": words,
        "targets": [t.name for t in p.targets],
        "device": torch.device(state.job_device).type,
        "checkpoint_files": None if run.train_key or run.checkpoint is None else run.card,
    }
    study = study_notes(run)
    if study:  # only then: stages without a pinned epoch or a mark keep their keys
        config["study"] = study
    if p.scoring.tile:  # only then: untiled stages keep their keys, so earlier runs are reused
        config["tiling"] = {"tile": True, "tile_overlap": p.scoring.tile_overlap}
    if run.spec.compat == "reference":  # words from the release's fixed table (earlier: the user's paths)
        config["reference_words"] = "per-dataset-table"
    upstream = [run.train_key] if run.train_key else []
    stage = state.store.stage("score", config, upstream=upstream, data=[d.content_hash for d in targets])
    settings = ScoreSettings(
        batch_size=p.scoring.batch_size,
        device=state.job_device,
        compat=run.spec.compat,
        class_words=words,
        dataset_kinds={t.name: t.kind for t in targets},
        chunk_size=p.scoring.chunk_size,
        tile=p.scoring.tile,
        tile_overlap=p.scoring.tile_overlap,
        seed=DEFAULT_SEED if run.seed is None else run.seed,  # a trained run's seed; else the default
    )
    job = ScoreJob(
        folder=stage.folder,
        checkpoint=run.checkpoint,
        model=run.spec.model,
        create_kwargs=spec.create_kwargs(),
        image_score=run.spec.image_score,
        manifest=manifest,
        settings=settings,
        study=study,
    )
    return StageTask(
        stage, run.label, len(manifest), config, job, resumable=True, unusable=unusable_predictions, distributable=True
    )


def run(state: RunState) -> None:
    """Score the targets with every model run; link the predictions and write the targets manifest."""
    manifest = _targets_manifest(state)
    tasks = [_task(state, model_run, manifest) for model_run in state.models]
    records = run_tasks(state, tasks)
    for model_run, task, record in zip(state.models, tasks, records, strict=True):
        if model_run.checkpoint is None:
            model_run.card = record.get("card", {})
        state.predictions[model_run.label] = task.stage.folder / "predictions"
        state.score_keys[model_run.label] = task.stage.key
        rel_link(state.run_dir / "predictions" / model_run.label, task.stage.folder / "predictions")
    state.manifest = manifest
    write_text_atomic(state.run_dir / PRIVATE / "manifest.csv", manifest.to_csv(index=False, lineterminator="\n"))
