"""The train stage: one stored, resumable, distributable stage per trainable model and training seed.

Training-free models are not trained (the score stage builds them); a model with a ``checkpoint:`` loads it
(its files' sha256 stand for it in the score stage's key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medad.engine.runtime import seed_everything
from medad.errors import ConfigError
from medad.protocols.schema import ModelSpec, TrainingSpec
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
from medad.protocols.structure import not_zero_shot_marks
from medad.utils.io import sha256_file


@dataclass(frozen=True)
class TrainSettings:
    """``medad.engine.train.train``'s optimisation settings, from the protocol's ``training:``."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_fraction: float
    batch_size: int
    micro_batch_size: int | None
    cache_features: bool

    @classmethod
    def from_spec(cls, spec: TrainingSpec) -> TrainSettings:
        """The settings of a ``training:`` section."""
        return cls(
            epochs=spec.epochs,
            lr=spec.lr,
            weight_decay=spec.weight_decay,
            warmup_fraction=spec.warmup,
            batch_size=spec.batch_size,
            micro_batch_size=spec.micro_batch_size,
            cache_features=spec.cache_features,
        )


@dataclass(frozen=True)
class TrainJob:
    """One train stage (model x seed): build the model and train it into the stage folder."""

    folder: Path
    seed: int
    model: str
    create_kwargs: Mapping[str, Any]
    manifests: tuple[pd.DataFrame, ...]
    settings: TrainSettings
    device: str
    cache_dir: str
    compat: str
    class_words: Mapping[str, str]

    def __call__(self, advance: Advance | None) -> dict[str, Any]:
        from medad.engine.train import train
        from medad.models import TrainableAnomalyModel, create_model

        seed_everything(self.seed)
        model = create_model(self.model, **self.create_kwargs)
        if not isinstance(model, TrainableAnomalyModel):  # the train stage runs only for trainable kinds
            raise ConfigError(f"model {self.model!r} has no adapters to train; remove its `training:` section")
        result = train(
            model,
            list(self.manifests),
            self.folder,
            **asdict(self.settings),
            seed=self.seed,
            device=self.device,
            cache_dir=self.cache_dir,
            compat=self.compat,
            class_words=dict(self.class_words),
            progress=False,
            on_epoch_end=None if advance is None else lambda epoch, stats: advance(1),
        )
        return {"checkpoint": result.checkpoint.relative_to(self.folder).as_posix(), "card": model.card()}


def unusable_training(folder: Path) -> str | None:
    """Why an interrupted train stage cannot be resumed: checkpoint folders of which none is complete (killed
    while writing the first epoch's checkpoint; training would refuse to resume them), or ``None``."""
    from medad.engine.train import last_checkpoint

    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and last_checkpoint(checkpoints) is None:
        return "checkpoint folders none of which is complete"
    return None


def _checkpoint_run(spec: ModelSpec) -> ModelRun:
    """A model that loads its ``checkpoint:``; its files' sha256 stand for it."""
    assert spec.checkpoint is not None
    ckpt = Path(spec.checkpoint)
    files = sorted(f for f in ckpt.iterdir() if f.is_file())
    key = {f.name: sha256_file(f) for f in files}
    return ModelRun(spec.name, spec, None, train_key=None, checkpoint=ckpt, card=key)


def _seed_tasks(state: RunState, spec: ModelSpec, training: TrainingSpec) -> list[tuple[ModelRun, StageTask]]:
    """One train task per training seed of a trainable model."""
    datasets = [state.datasets[d.name] for d in training.datasets]
    # what decides the trained weights (the score epoch only picks one of the checkpoints: same stage)
    unhashed = {"datasets", "seeds", "cache_features", "epoch_sweep", "score_epoch"}
    tcfg = training.model_dump(mode="json", exclude=unhashed)
    out = []
    for seed in training.seeds:
        label = spec.name if len(training.seeds) == 1 else f"{spec.name}-seed{seed}"
        words = class_words(spec, datasets)
        config: dict[str, Any] = {
            "model": model_config(spec),
            "training": tcfg,
            "seed": seed,
            "class_words": words,
            "device": torch.device(state.job_device).type,
        }
        if spec.compat == "reference":  # words from the release's fixed table (earlier: the user's paths)
            config["reference_words"] = "per-dataset-table"
        stage = state.store.stage("train", config, data=[d.content_hash for d in datasets])
        job = TrainJob(
            folder=stage.folder,
            seed=seed,
            model=spec.model,
            create_kwargs=spec.create_kwargs(),
            manifests=tuple(d.manifest for d in datasets),
            settings=TrainSettings.from_spec(training),
            device=state.job_device,
            cache_dir=str(state.store.root / "cache"),
            compat=spec.compat,
            class_words=words,
        )
        task = StageTask(
            stage, label, training.epochs, config, job, resumable=True, unusable=unusable_training, distributable=True
        )
        run = ModelRun(label, spec, seed, train_key=stage.key, score_epoch=training.score_epoch, epochs=training.epochs)
        out.append((run, task))
    return out


def run(state: RunState) -> None:
    """Train every trainable model of the protocol (reusing finished seeds); record the model runs."""
    from medad.models import ModelKind, model_kind

    p = state.resolved
    tasks: list[StageTask] = []
    runs: list[ModelRun] = []
    for spec in p.models:
        if model_kind(spec.model) is not ModelKind.TRAINABLE:  # no adapters: built directly in the score stage
            runs.append(ModelRun(spec.name, spec, None))
        elif spec.checkpoint is not None:
            runs.append(_checkpoint_run(spec))
        else:
            training = p.training_for(spec)
            assert training is not None  # the structure check: no checkpoint needs a training: section
            for model_run, task in _seed_tasks(state, spec, training):
                runs.append(model_run)
                tasks.append(task)
    records = iter(run_tasks(state, tasks))
    for model_run in runs:  # the structure check allowed these only with allow_not_zero_shot / intended_overlap
        model_run.not_zero_shot = not_zero_shot_marks(state.lp, p.model_index(model_run.spec.name))
        if model_run.train_key is not None:
            record = next(records)
            stage_folder = state.store.root / "train" / model_run.train_key
            model_run.checkpoint = stage_folder / record["checkpoint"]
            if model_run.score_epoch is not None:  # the pinned epoch's checkpoint (training keeps every epoch's)
                model_run.checkpoint = model_run.checkpoint.with_name(f"epoch_{model_run.score_epoch:03d}")
            model_run.card = record["card"]
            rel_link(state.run_dir / "checkpoints" / model_run.label, stage_folder)
        state.models.append(model_run)
