"""The score stage: one stored, resumable (by predictions chunk), distributable stage per model run, scoring
every target image; then the run's targets manifest (``private/manifest.csv``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medad.engine.references import ReferenceSet
from medad.engine.request import DEFAULT_SEED, ScoreSettings
from medad.protocols.references import fewshot_label
from medad.protocols.stages.base import (
    Advance,
    FewShotRun,
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


def _target_rows(state: RunState, name: str) -> pd.DataFrame:
    """One target's scored rows (``dataset`` = its protocol name): its own normals drawn as references left out."""
    from medad.protocols.references import scored_rows

    frame = scored_rows(state.datasets[name].manifest, state.references.get(name)).copy()
    frame["dataset"] = name
    return frame


def _targets_manifest(state: RunState) -> pd.DataFrame:
    """All targets in one manifest (``dataset`` = the target's protocol name; row position = index)."""
    return pd.concat([_target_rows(state, target.name) for target in state.resolved.targets], ignore_index=True)


def _removed(state: RunState, names: list[str]) -> dict[str, list[str]]:
    """Per target, the case ids of its own normals removed from scoring (drawn as references)."""
    out: dict[str, list[str]] = {}
    for name in names:
        draws = state.references.get(name)
        if draws is not None and draws.removed:
            out[name] = sorted({i for s in draws.record()["sets"] for i in s["case_ids"]})
    return out


def _task(
    state: RunState,
    run: ModelRun,
    manifest: pd.DataFrame,
    names: list[str] | None = None,
    references: tuple[str, ReferenceSet] | None = None,
) -> StageTask:
    """The score task of one model run on the targets ``names`` (default all), few-shot with ``references``
    (the target they belong to and the drawn set)."""
    p = state.resolved
    names = [t.name for t in p.targets] if names is None else names
    targets = [state.datasets[name] for name in names]
    spec = p.models[p.model_index(run.spec.name)]
    words = class_words(run.spec, targets)
    config: dict[str, Any] = {
        "model": model_config(spec),
        "image_score": run.spec.image_score,
        "class_words": words,
        "targets": names,
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
    removed = _removed(state, names)
    if removed:  # only then: protocols without references keep their keys
        config["removed_references"] = removed
    if references is not None:
        config["references"] = {"target": references[0], **references[1].record()}
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
        references=None if references is None else references[1],
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
    item = run.label if references is None else f"{fewshot_label(run.label, references[1].shots, references[1].draw)} "
    item += "" if references is None else references[0]
    return StageTask(
        stage, item, len(manifest), config, job, resumable=True, unusable=unusable_predictions, distributable=True
    )


def _fewshot_tasks(state: RunState, run: ModelRun) -> list[tuple[FewShotRun, str, StageTask]]:
    """(few-shot run, target, task) of one model run: per target with references, per shot count and draw."""
    out = []
    for name, draws in state.references.items():
        rows = _target_rows(state, name)
        for shots, draw, refs in draws.items():
            label = fewshot_label(run.label, shots, draw)
            fewshot = state.fewshot.setdefault(label, FewShotRun(run.label, shots, draw))
            out.append((fewshot, name, _task(state, run, rows, [name], (name, refs))))
    return out


def run(state: RunState) -> None:
    """Score the targets with every model run (0-shot, unless the model scores only with references, then with
    every target's references); link the predictions and write the targets manifest."""
    from medad.models.registry import model_needs_references

    manifest = _targets_manifest(state)
    plain = [r for r in state.models if not model_needs_references(r.spec.model)]
    tasks = [(r, _task(state, r, manifest)) for r in plain]
    fewshot = [(r, *t) for r in state.models for t in _fewshot_tasks(state, r)]
    records = run_tasks(state, [task for _, task in tasks] + [task for *_, task in fewshot])
    cards: dict[str, dict[str, Any]] = {}
    for (model_run, task), record in zip(tasks, records[: len(tasks)], strict=True):
        cards.setdefault(model_run.label, record)
        state.predictions[model_run.label] = task.stage.folder / "predictions"
        state.score_keys[model_run.label] = task.stage.key
        rel_link(state.run_dir / "predictions" / model_run.label, task.stage.folder / "predictions")
    for (model_run, few, target, task), record in zip(fewshot, records[len(tasks) :], strict=True):
        cards.setdefault(model_run.label, record)
        few.predictions[target] = task.stage.folder / "predictions"
        label = fewshot_label(few.base, few.shots, few.draw)
        state.score_keys[f"{label}/{target}"] = task.stage.key
        rel_link(state.run_dir / "predictions" / label / target, task.stage.folder / "predictions")
    for model_run in state.models:
        if model_run.checkpoint is None:
            model_run.card = cards.get(model_run.label, {}).get("card", {})
    state.manifest = manifest
    write_text_atomic(state.run_dir / PRIVATE / "manifest.csv", manifest.to_csv(index=False, lineterminator="\n"))
