"""The resumable protocol runner: data -> train -> score -> evaluate -> stats -> report -> export.

Every stage's output is stored in the stage store (:mod:`medad.protocols.cache`) under a content hash of its
inputs, so a re-run reuses finished work and a run killed at any moment (even ``kill -9``) resumes: training
continues from its last epoch checkpoint, scoring from its last predictions chunk, other stages restart.
The run folder ``<output>/<protocol-name>/<config-hash>/`` then links the stage outputs and holds
``metrics.json`` (a byte copy of the evaluation's), ``protocol.resolved.yaml``, ``provenance.json`` and
``run.log``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from medad.engine.runtime import seed_everything
from medad.protocols import provenance
from medad.protocols.cache import Stage, StageStore
from medad.protocols.epoch_sweep import SWEEP_METRICS, SWEEP_NOTE, run_epoch_sweep
from medad.protocols.executor import Job, job_device, make_executor, run_jobs, stage_lock
from medad.protocols.manifests import DatasetData, FileHashCache, check_file_overlap, fingerprint, write_data_manifests
from medad.protocols.progress import RunDisplay
from medad.protocols.schema import DatasetSpec, ExportSpec, ModelSpec
from medad.protocols.validate import (
    LoadedProtocol,
    check_data_settings,
    check_output,
    config_hash,
    load_protocol,
    require_resources,
    resolved_dict,
)
from medad.protocols.yamlio import shareable_protocol
from medad.utils.io import canonical_json, sha256_file, write_json_atomic, write_text_atomic
from medad.utils.locking import LOCK_NAME, FolderLock
from medad.utils.privacy import PRIVATE, private_dir, redact_paths

STAGES_FOLDER = "_stages"


@dataclass
class ModelRun:
    """One model instance of the study: a model spec with one training seed (or its checkpoint)."""

    label: str
    spec: ModelSpec
    seed: int | None
    train_key: str | None = None
    checkpoint: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunState:
    """Everything the stages share while a protocol runs."""

    lp: LoadedProtocol
    resolved: dict[str, Any]
    config_hash: str
    run_dir: Path
    store: StageStore
    display: RunDisplay
    device: torch.device
    job_device: str = ""
    executor: Any | None = None
    datasets: dict[str, DatasetData] = field(default_factory=dict)
    synthetic_dirs: dict[str, Path] = field(default_factory=dict)
    models: list[ModelRun] = field(default_factory=list)
    predictions: dict[str, Path] = field(default_factory=dict)
    score_keys: dict[str, str] = field(default_factory=dict)
    stage_keys: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _rel_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` with a relative symlink (replacing an old link)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())
    os.replace(tmp, link)


def _run_stage(
    state: RunState,
    stage: Stage,
    item: str,
    total: int | None,
    inputs: Any,
    work: Callable[[Stage, Callable[[int], None]], dict[str, Any]],
    *,
    resumable: bool,
) -> dict[str, Any]:
    """Run ``work`` unless the stage is done; return its ``_done.json`` record."""
    state.stage_keys[f"{stage.name}/{item}"] = stage.key
    task = state.display.task(stage.name, item, total)
    with stage_lock(stage):
        if stage.done:
            state.display.finish(task, stage.name, item, reused=True)
            return stage.record()
        state.store.begin(stage, inputs, resumable=resumable)
        info = work(stage, lambda n: state.display.advance(task, stage.name, n))
        state.store.finish(stage, info)
    state.display.finish(task, stage.name, item, reused=False)
    return stage.record()


# ---------------------------------------------------------------- data


def _synthetic_stage(state: RunState, name: str) -> Path:
    from medad.data import write_layout

    config = state.lp.protocol.synthetic[name].model_dump(mode="json")
    stage = state.store.stage("synthetic", config)

    def work(st: Stage, advance: Callable[[int], None]) -> dict[str, Any]:
        write_layout(st.folder / "data", **config)
        advance(1)
        return {}

    _run_stage(state, stage, name, 1, config, work, resumable=False)
    return stage.folder / "data"


def _load_dataset(state: RunState, spec: DatasetSpec, resolved: dict[str, Any]) -> DatasetData:
    from medad.data import load_manifest

    if spec.synthetic is not None:
        if spec.synthetic not in state.synthetic_dirs:
            state.synthetic_dirs[spec.synthetic] = _synthetic_stage(state, spec.synthetic)
        root = state.synthetic_dirs[spec.synthetic]
    else:
        root = Path(resolved["root"])
    task = state.display.task("data", spec.name, 1)
    manifest = load_manifest(root, spec.kind, **spec.options)
    data = fingerprint(spec.name, spec.kind, root, manifest, FileHashCache(state.store.root / PRIVATE / "file_sha256"))
    state.display.finish(task, "data", spec.name, reused=False)
    return data


def _data(state: RunState) -> None:
    p = state.lp.protocol
    specs: list[tuple[DatasetSpec, dict[str, Any]]] = list(zip(p.targets, state.resolved["targets"], strict=True))
    if p.training is not None:
        specs += list(zip(p.training.datasets, state.resolved["training"]["datasets"], strict=True))
    for spec, resolved in specs:
        state.datasets[spec.name] = _load_dataset(state, spec, resolved)
    write_data_manifests(state.run_dir, state.datasets)  # source paths only in private/data/
    for name, folder in state.synthetic_dirs.items():
        _rel_link(state.run_dir / "data" / name, folder)
    if p.training is not None:
        training = [state.datasets[d.name] for d in p.training.datasets]
        targets = [state.datasets[d.name] for d in p.targets]
        state.notes += check_file_overlap(training, targets, p.intended_overlap)
        if p.intended_overlap:
            state.notes.append("the protocol sets intended_overlap: training data may overlap the targets")


# ---------------------------------------------------------------- models


def _model_config(state: RunState, index: int) -> dict[str, Any]:
    resolved = state.resolved["models"][index]
    return {k: resolved[k] for k in ("model", "compat", "options", "weights")}


def _create_kwargs(resolved_model: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` keyword arguments: options, compat, image score and the frozen weight sources."""
    kwargs = dict(resolved_model["options"])
    kwargs["compat"] = resolved_model["compat"]
    kwargs["image_score"] = resolved_model["image_score"]
    backbone, text = resolved_model["weights"]["backbone"], resolved_model["weights"]["text"]
    if backbone is not None:
        if backbone["id"] is not None:
            kwargs["backbone"] = backbone["id"]
        if backbone["file"] is not None:
            kwargs["backbone_weights"] = backbone["file"]
    if text is not None:
        kwargs["text_weights"] = text["file"] or text["id"]
    return kwargs


def _class_words(spec: ModelSpec, datasets: list[DatasetData]) -> dict[str, str]:
    words: dict[str, str] = {}
    for d in datasets:
        words.update(spec.class_words.get(d.kind, {}))
        words.update(spec.class_words.get(d.name, {}))
    return words


def _train_job(args: dict[str, Any], advance: Callable[[int], None] | None) -> dict[str, Any]:
    """One train stage (model x seed): build the model and train it into the stage folder."""
    from medad.engine.train import train
    from medad.models import create_model

    seed_everything(args["seed"])
    model = create_model(args["model"], **args["create_kwargs"])
    folder = Path(args["folder"])
    result = train(
        model,
        args["manifests"],
        folder,
        **args["training"],
        seed=args["seed"],
        device=args["device"],
        cache_dir=args["cache_dir"],
        compat=args["compat"],
        class_words=args["class_words"],
        progress=False,
        on_epoch_end=None if advance is None else lambda epoch, stats: advance(1),
    )
    return {"checkpoint": result.checkpoint.relative_to(folder).as_posix(), "card": model.card()}


def _unusable_training(folder: Path) -> str | None:
    """Why an interrupted train stage cannot be resumed: checkpoint folders of which none is complete (killed
    while writing the first epoch's checkpoint; training would refuse to resume them), or ``None``."""
    from medad.engine.train import _last_checkpoint

    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and _last_checkpoint(checkpoints) is None:
        return "checkpoint folders none of which is complete"
    return None


def _train(state: RunState) -> None:
    from medad.models import ModelKind, model_kind

    p = state.lp.protocol
    jobs: list[Job] = []
    runs: list[ModelRun] = []
    for i, spec in enumerate(p.models):
        resolved_model = state.resolved["models"][i]
        if model_kind(spec.model) is not ModelKind.TRAINABLE:  # baselines without adapters: built directly in _score
            runs.append(ModelRun(spec.name, spec, None))
            continue
        if spec.checkpoint is not None:
            ckpt = Path(resolved_model["checkpoint"])
            files = sorted(f for f in ckpt.iterdir() if f.is_file())
            key = {f.name: sha256_file(f) for f in files}
            runs.append(ModelRun(spec.name, spec, None, train_key=None, checkpoint=ckpt, card=key))
            continue
        assert p.training is not None
        training = [state.datasets[d.name] for d in p.training.datasets]
        tcfg = p.training.model_dump(mode="json", exclude={"datasets", "seeds", "cache_features", "epoch_sweep"})
        for seed in p.training.seeds:
            label = spec.name if len(p.training.seeds) == 1 else f"{spec.name}-seed{seed}"
            config = {
                "model": _model_config(state, i),
                "training": tcfg,
                "seed": seed,
                "class_words": _class_words(spec, training),
                "device": torch.device(state.job_device).type,
            }
            if spec.compat == "reference":  # words from the release's fixed table (earlier: the user's paths)
                config["reference_words"] = "per-dataset-table"
            stage = state.store.stage("train", config, data=[d.content_hash for d in training])
            args = {
                "folder": str(stage.folder),
                "seed": seed,
                "model": spec.model,
                "create_kwargs": _create_kwargs(resolved_model),
                "manifests": [d.manifest for d in training],
                "training": {
                    "epochs": p.training.epochs,
                    "lr": p.training.lr,
                    "weight_decay": p.training.weight_decay,
                    "warmup_fraction": p.training.warmup,
                    "batch_size": p.training.batch_size,
                    "micro_batch_size": p.training.micro_batch_size,
                    "cache_features": p.training.cache_features,
                },
                "device": state.job_device,
                "cache_dir": str(state.store.root / "cache"),
                "compat": spec.compat,
                "class_words": config["class_words"],
            }
            jobs.append(Job(stage, label, p.training.epochs, config, _train_job, args, unusable=_unusable_training))
            runs.append(ModelRun(label, spec, seed, train_key=stage.key))
    records = iter(run_jobs(jobs, state.store, state.display, state.stage_keys, state.executor))
    for run in runs:
        if run.train_key is not None:
            record = next(records)
            stage_folder = state.store.root / "train" / run.train_key
            run.checkpoint = stage_folder / record["checkpoint"]
            run.card = record["card"]
            _rel_link(state.run_dir / "checkpoints" / run.label, stage_folder)
        state.models.append(run)


# ---------------------------------------------------------------- scoring


def _targets_manifest(state: RunState) -> pd.DataFrame:
    """All targets in one manifest (``dataset`` = the target's protocol name; row position = index)."""
    frames = []
    for target in state.lp.protocol.targets:
        frame = state.datasets[target.name].manifest.copy()
        frame["dataset"] = target.name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _score_job(args: dict[str, Any], advance: Callable[[int], None] | None) -> dict[str, Any]:
    """One score stage (model run): load its checkpoint and score every target image into the stage folder."""
    from medad.engine.scorer import score
    from medad.models import create_model, load_checkpoint

    device = args["device"]
    if args["checkpoint"] is None:  # training-free model (no adapters): build it from the protocol's settings
        model = create_model(args["model"], **args["create_kwargs"])
    else:
        model = load_checkpoint(args["checkpoint"], device=device, image_score=args["image_score"])
    score(
        model,
        args["manifest"],
        Path(args["folder"]) / "predictions",
        batch_size=args["batch_size"],
        device=device,
        compat=args["compat"],
        class_words=args["class_words"],
        dataset_kinds=args["dataset_kinds"],
        chunk_size=args["chunk_size"],
        progress=advance or False,  # images scored, batch by batch
        tile=args["tile"],
        tile_overlap=args["tile_overlap"],
    )
    if args["checkpoint"] is None:
        return {"n_images": len(args["manifest"]), "card": model.card()}
    return {"n_images": len(args["manifest"])}


def _unusable_predictions(folder: Path) -> str | None:
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


def _score(state: RunState) -> pd.DataFrame:
    p = state.lp.protocol
    manifest = _targets_manifest(state)
    targets = [state.datasets[t.name] for t in p.targets]
    jobs: list[Job] = []
    for run in state.models:
        index = [m.name for m in p.models].index(run.spec.name)
        words = _class_words(run.spec, targets)
        config = {
            "model": _model_config(state, index),
            "image_score": run.spec.image_score,
            "class_words": words,
            "targets": [t.name for t in p.targets],
            "device": torch.device(state.job_device).type,
            "checkpoint_files": None if run.train_key or run.checkpoint is None else run.card,
        }
        if p.scoring.tile:  # only then: untiled stages keep their keys, so earlier runs are reused
            config["tiling"] = {"tile": True, "tile_overlap": p.scoring.tile_overlap}
        if run.spec.compat == "reference":  # words from the release's fixed table (earlier: the user's paths)
            config["reference_words"] = "per-dataset-table"
        upstream = [run.train_key] if run.train_key else []
        stage = state.store.stage("score", config, upstream=upstream, data=[d.content_hash for d in targets])
        args = {
            "folder": str(stage.folder),
            "checkpoint": None if run.checkpoint is None else str(run.checkpoint),
            "model": run.spec.model,
            "create_kwargs": _create_kwargs(state.resolved["models"][index]),
            "image_score": run.spec.image_score,
            "device": state.job_device,
            "manifest": manifest,
            "batch_size": p.scoring.batch_size,
            "chunk_size": p.scoring.chunk_size,
            "tile": p.scoring.tile,
            "tile_overlap": p.scoring.tile_overlap,
            "compat": run.spec.compat,
            "class_words": words,
            "dataset_kinds": {t.name: t.kind for t in targets},
        }
        jobs.append(Job(stage, run.label, len(manifest), config, _score_job, args, unusable=_unusable_predictions))
    records = run_jobs(jobs, state.store, state.display, state.stage_keys, state.executor)
    for run, job, record in zip(state.models, jobs, records, strict=True):
        if run.checkpoint is None:
            run.card = record.get("card", {})
        state.predictions[run.label] = job.stage.folder / "predictions"
        state.score_keys[run.label] = job.stage.key
        _rel_link(state.run_dir / "predictions" / run.label, job.stage.folder / "predictions")
    return manifest


# ---------------------------------------------------------------- evaluation, stats, report, export


def _comparisons(state: RunState) -> list[tuple[str, str]]:
    """Model pairs to compare: the protocol's pairs, seed by seed where both models were trained per seed."""
    out: list[tuple[str, str]] = []
    for a, b in state.lp.protocol.statistics.comparisons:
        for ra in (r for r in state.models if r.spec.name == a):
            for rb in (r for r in state.models if r.spec.name == b):
                if ra.seed is None or rb.seed is None or ra.seed == rb.seed:
                    out.append((ra.label, rb.label))
    return out


def _evaluate(state: RunState, manifest: pd.DataFrame) -> Stage:
    from medad.data import read_mask
    from medad.evaluation import evaluate

    p = state.lp.protocol
    stats = p.statistics
    config = {
        "metrics": p.metrics,
        "statistics": stats.model_dump(mode="json", exclude={"comparisons"}),
        "comparisons": _comparisons(state),
        "models": sorted(state.predictions),
    }
    if p.evaluation_resolution != "native":  # only then: native stages keep their keys
        config["resolution"] = p.evaluation_resolution
    sweep = p.training is not None and p.training.epoch_sweep
    if sweep:  # the released code's selection on the test data, labelled (medad/protocols/epoch_sweep.py)
        config["epoch_sweep"] = True
        state.notes.append(SWEEP_NOTE)
    stage = state.store.stage("evaluate", config, upstream=sorted(state.score_keys.values()))
    evaluated = manifest.copy()
    if stats.unit == "image":
        evaluated["group_id"] = [f"image-{i}" for i in range(len(evaluated))]
    labelled = int(evaluated["label"].notna().sum())

    def work(st: Stage, advance: Callable[[int], None]) -> dict[str, Any]:
        def counted_read_mask(row: Any) -> Any:
            mask = read_mask(row)
            advance(1)
            return mask

        evaluate(
            dict(state.predictions),
            evaluated,
            st.folder / "evaluation",
            **({"metrics": p.metrics} if p.metrics else {}),
            ci={"n_resamples": stats.resamples, "seed": stats.seed, "method": stats.ci, "level": stats.confidence},
            comparisons=config["comparisons"],
            correction=stats.correction,
            mask_reader=counted_read_mask,
            resolution=p.evaluation_resolution,
        )
        if sweep:
            _epoch_sweep(state, manifest, evaluated, st.folder / "evaluation", read_mask)
        return {}

    _run_stage(state, stage, "all targets", labelled, config, work, resumable=False)
    _rel_link(state.run_dir / "evaluation", stage.folder / "evaluation")
    return stage


def _epoch_sweep(
    state: RunState, manifest: pd.DataFrame, evaluated: pd.DataFrame, out: Path, read_mask: Callable[..., Any]
) -> None:
    """Score and evaluate every epoch of every trained model on the targets (``training.epoch_sweep``)."""
    from medad.engine.scorer import score
    from medad.evaluation import evaluate
    from medad.models import load_checkpoint

    p = state.lp.protocol
    targets = [state.datasets[t.name] for t in p.targets]

    def score_epoch(run: ModelRun, checkpoint: Path, folder: Path) -> None:
        model = load_checkpoint(checkpoint, device=state.job_device, image_score=run.spec.image_score)
        score(model, manifest, folder, batch_size=p.scoring.batch_size, device=state.job_device,
              compat=run.spec.compat, class_words=_class_words(run.spec, targets), chunk_size=p.scoring.chunk_size,
              progress=False, tile=p.scoring.tile, tile_overlap=p.scoring.tile_overlap,
              dataset_kinds={t.name: t.kind for t in targets})  # fmt: skip

    def evaluate_epoch(label: str, predictions: Path, folder: Path) -> list[dict[str, Any]]:
        result = evaluate({label: predictions}, evaluated, folder, metrics=SWEEP_METRICS, ci={"n_resamples": 0},
                          comparisons=None, mask_reader=read_mask, resolution=p.evaluation_resolution)  # fmt: skip
        return list(result["rows"])

    run_epoch_sweep(state.models, state.store.root / "train", out, score_epoch, evaluate_epoch)


def _seed_summary(rows: list[dict[str, Any]], runs: list[ModelRun]) -> list[dict[str, Any]]:
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


def _stats(state: RunState, evaluation: Stage) -> Stage:
    labels = {r.label: {"model": r.spec.name, "seed": r.seed} for r in state.models}
    stage = state.store.stage("stats", {"labels": labels}, upstream=[evaluation.key])

    def work(st: Stage, advance: Callable[[int], None]) -> dict[str, Any]:
        metrics = json.loads((evaluation.folder / "evaluation" / "metrics.json").read_text(encoding="utf-8"))
        write_json_atomic(
            st.folder / "seed_summary.json", {"models": labels, "rows": _seed_summary(metrics["rows"], state.models)}
        )
        advance(1)
        return {}

    _run_stage(state, stage, "seeds", 1, {"labels": labels}, work, resumable=False)
    return stage


def _report(state: RunState, evaluation: Stage, manifest: pd.DataFrame) -> Stage:
    from medad.reports import build_report

    p = state.lp.protocol
    title = f"medad protocol {state.lp.name}"
    if p.intended_overlap:
        title += " (training data intentionally overlaps the targets: not zero-shot; see provenance.json)"
    config = {"title": title, "notes": state.notes, "description": p.description}
    stage = state.store.stage("report", config, upstream=[evaluation.key])

    def work(st: Stage, advance: Callable[[int], None]) -> dict[str, Any]:
        build_report(
            evaluation.folder / "evaluation",
            st.folder / "report",
            predictions=dict(state.predictions),
            manifest=manifest,
            title=title,
        )
        advance(1)
        return {}

    _run_stage(state, stage, "report", 1, config, work, resumable=False)
    _rel_link(state.run_dir / "report", stage.folder / "report")
    return stage


def _export(state: RunState, manifest: pd.DataFrame) -> None:
    from medad.export import export_predictions, resolve_threshold

    for i, spec in enumerate(state.lp.protocol.exports):
        for run in state.models:
            if spec.models and run.spec.name not in spec.models:
                continue
            predictions = state.predictions[run.label]
            config = {"formats": spec.formats, "threshold": spec.threshold, "deidentify": spec.deidentify}
            stage = state.store.stage("export", config, upstream=[state.score_keys[run.label]])

            def work(
                st: Stage, advance: Callable[[int], None], *, pred: Path = predictions, spec: ExportSpec = spec
            ) -> dict[str, Any]:
                threshold = resolve_threshold(spec.threshold, run_dir=pred, manifest=manifest)
                export_predictions(
                    pred,
                    manifest,
                    st.folder / "export",
                    formats=spec.formats,
                    threshold=threshold,
                    deidentify=spec.deidentify,
                )
                advance(1)
                return {"threshold": threshold.to_dict()}

            _run_stage(state, stage, f"{run.label} #{i}", 1, config, work, resumable=False)
            _rel_link(state.run_dir / "exports" / f"{i}-{run.label}", stage.folder / "export")


# ---------------------------------------------------------------- the run


def _check_weight_hashes(lp: LoadedProtocol, resolved: dict[str, Any]) -> None:
    for i, model in enumerate(resolved["models"]):
        for role, source in model["weights"].items():
            if source is None or source["file"] is None or source["sha256"] is None:
                continue
            actual = sha256_file(source["file"])
            if actual != source["sha256"]:
                raise lp.error(
                    ("models", i, "weights", role, "sha256"),
                    f"{source['file']} has sha256 {actual}, not {source['sha256']}; download the file again "
                    f"(see docs/models.md) or fix the expected hash",
                )


def _provenance(state: RunState, started: str) -> dict[str, Any]:
    p = state.lp.protocol
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
                "protocol": state.resolved["models"][[m.name for m in p.models].index(r.spec.name)]["weights"],
                "card": r.card,
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
    resolved = resolved_dict(lp)
    _check_weight_hashes(lp, resolved)
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
    lp: LoadedProtocol, resolved: dict[str, Any], chash: str, out_root: Path, run_dir: Path, progress: bool
) -> Path:
    """The run itself, under the run folder's lock."""
    from medad.engine.runtime import resolve_device

    device = resolve_device(None if lp.protocol.device == "auto" else lp.protocol.device)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    display = RunDisplay(run_dir / "run.log", enabled=progress)
    state = RunState(lp, resolved, chash, run_dir, StageStore(out_root / STAGES_FOLDER), display, device)
    executor_spec = resolved["executor"]
    state.job_device = job_device(lp.protocol.device, executor_spec) or str(device)
    if executor_spec is not None:
        state.executor = make_executor(executor_spec, out_root / "_submitit")
    for folder, protocol in ((private_dir(run_dir), resolved), (run_dir, shareable_protocol(resolved))):
        text = yaml.safe_dump(protocol, sort_keys=False, allow_unicode=True)
        write_text_atomic(folder / "protocol.resolved.yaml", text)
    display.log(f"run {lp.name} {chash} started ({' '.join(redact_paths(provenance.command_line()))})")
    with display:
        _data(state)
        check_data_settings(lp, state.datasets)
        _train(state)
        manifest = _score(state)
        write_text_atomic(run_dir / PRIVATE / "manifest.csv", manifest.to_csv(index=False, lineterminator="\n"))
        evaluation = _evaluate(state, manifest)
        stats = _stats(state, evaluation)
        _report(state, evaluation, manifest)
        _export(state, manifest)
    shutil.copyfile(evaluation.folder / "evaluation" / "metrics.json", run_dir / ".metrics.json.tmp")
    os.replace(run_dir / ".metrics.json.tmp", run_dir / "metrics.json")
    write_text_atomic(run_dir / "seed_summary.json", (stats.folder / "seed_summary.json").read_text(encoding="utf-8"))
    write_text_atomic(run_dir / "stages.json", canonical_json(state.stage_keys))
    record = _provenance(state, started)
    write_json_atomic(run_dir / PRIVATE / "provenance.json", record)
    write_json_atomic(run_dir / "provenance.json", provenance.shareable(record))
    display.log(f"run {lp.name} {chash} finished")
    return run_dir
