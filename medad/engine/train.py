"""The training loop: AD-DINOv3 adapters on auxiliary (industrial) data, resumable and deterministic.

Protocol (the AD-DINOv3 release's ``train.py``, see the method notes §5): AdamW (lr 1e-5, betas (0.9, 0.999), weight
decay 1e-2) over the trainable adapters only, a ``LambdaLR`` stepped every optimiser step with a linear
warm-up over the first 3% of steps and a constant rate after it (in ``reference`` mode exactly the release's
factor and length, in ``clean`` mode medad's, see :func:`warmup_constant`), an effective batch of 64 (gradient
accumulation when the micro-batch is smaller) and a FIXED number of epochs: no checkpoint is ever chosen on
target data. Unlike the reference code, everything is seeded: the data order of epoch ``e`` is a permutation
drawn from a generator seeded with ``(seed, e)``, so a run resumed after epoch ``k`` sees exactly the batches
an uninterrupted run sees, and on CPU ends with identical adapters.

Each epoch writes ``<out>/checkpoints/epoch_NNN/`` (``adapters.safetensors`` + ``card.json`` from
:func:`medad.models.save_checkpoint`, plus ``train_state.pt`` holding the optimiser, scheduler and RNG states
for resuming). Because the backbone is frozen and there is no augmentation, frozen features are computed once
and cached on disk (:mod:`medad.engine.features`).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from medad.engine.distributed import DDPTraining, OneProcess, training_hooks
from medad.engine.features import (
    CachedFeatureDataset,
    FeatureCache,
    default_cache_root,
    feature_cache_key,
    manifest_fingerprint,
)
from medad.engine.prompting import check_model_compat, class_words_used, prompt_words
from medad.engine.runtime import autocast, autocast_dtype, resolve_device, rng_state, seed_everything, set_rng_state
from medad.errors import RANDOM_WEIGHTS_WARNING, ConfigError, DataError, warn_once
from medad.utils.io import disk_errors, hash_config, write_json_atomic

if TYPE_CHECKING:
    from medad.models import TrainableAnomalyModel

REFERENCE_LR = 1e-5
"""The paper's learning rate (for ViT-L scale models). Tiny demo models need far more, e.g. 1e-3."""

LOSS_DISPLAY_EVERY = 25
"""Steps between loss updates on the progress bar (each update makes the host wait for the GPU)."""

_STATE_FILE = "train_state.pt"


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        checkpoint: the last epoch's checkpoint folder (load it with ``medad.models.load_checkpoint``).
        epochs: epochs completed in total (including those done before a resume).
        steps: optimiser steps taken in total.
        history: one dict per epoch completed in this call: ``epoch``, ``steps``, ``lr`` and the mean of each
            loss term over the epoch's micro-batches.
        resumed_from: the epoch the run resumed after (0 for a fresh run).
    """

    checkpoint: Path
    epochs: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0


def concat_manifests(manifests: pd.DataFrame | Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate manifests (e.g. several auxiliary datasets) into one with a fresh 0..N-1 index."""
    if isinstance(manifests, pd.DataFrame):
        return manifests.reset_index(drop=True)
    if not manifests:
        raise DataError("no training manifest given; pass at least one auxiliary dataset")
    return pd.concat(list(manifests), ignore_index=True)


def epoch_order(seed: int, epoch: int, n_items: int) -> list[int]:
    """The data order of one epoch: a permutation drawn from a generator seeded with ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(int(hash_config([seed, epoch]), 16) % (2**63))
    return torch.randperm(n_items, generator=generator).tolist()


def warmup_length(warmup_fraction: float, total_steps: int, compat: str = "clean") -> int:
    """Optimiser steps of the linear warm-up.

    ``reference`` follows the release: ``int(fraction * total_steps)``, which is 0 (no warm-up) for a run of
    fewer than 34 steps at 3%. ``clean`` rounds and keeps at least one step.
    """
    if compat == "reference":
        return int(warmup_fraction * total_steps)
    return max(1, round(warmup_fraction * total_steps))


def warmup_constant(warmup_steps: int, compat: str = "clean") -> Callable[[int], float]:
    """``LambdaLR`` factor (of the 0-based optimiser step): a linear warm-up over ``warmup_steps``, then 1.

    ``reference`` is the release's ``step / warmup_steps`` while ``step < warmup_steps``: its first step runs at
    lr 0 (AdamW's moments still count it, the adapters do not move). ``clean`` uses ``(step + 1) /
    warmup_steps``, so every step learns and the full rate is reached on the last warm-up step.
    """

    def reference(step: int) -> float:
        return step / max(1, warmup_steps) if step < warmup_steps else 1.0

    def clean(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps)

    return reference if compat == "reference" else clean


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete epoch checkpoint under ``folder`` (its state file written), or ``None``."""
    done = [p for p in folder.glob("epoch_*") if p.name[6:].isdigit() and (p / _STATE_FILE).exists()]
    return max(done, key=lambda p: int(p.name[6:]), default=None)


def train(
    model: TrainableAnomalyModel,
    manifests: pd.DataFrame | Sequence[pd.DataFrame],
    out_dir: str | Path,
    *,
    epochs: int = 100,
    lr: float = REFERENCE_LR,
    weight_decay: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_fraction: float = 0.03,
    batch_size: int = 64,
    micro_batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    cache_features: bool = True,
    cache_dir: str | Path | None = None,
    compat: str | None = None,
    class_words: Mapping[str, str] | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Train a model's adapters for a fixed number of epochs; resume from ``out_dir`` if it holds checkpoints.

    Args:
        model: a trainable medad model (``forward_features``, ``forward_head``, ``compute_loss``,
            ``trainable_state_dict``, ...). Its frozen parts must have ``requires_grad=False``.
        manifests: the auxiliary training data, one manifest or several (concatenated). ZSAD practice, as in
            the reference code, trains on the auxiliary dataset's TEST split (all classes).
        out_dir: run folder; checkpoints go to ``<out_dir>/checkpoints/epoch_NNN``.
        epochs: total epochs (fixed; the reference default is 100).
        lr: AdamW learning rate. The paper's 1e-5 suits ViT-L; the tiny demo model ``ad_dinov3_tiny`` needs a
            much larger rate such as 1e-3 to learn in a few hundred steps.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_fraction: share of all optimiser steps used for the linear warm-up (then constant).
        batch_size: effective batch per optimiser step.
        micro_batch_size: images per forward pass; gradients of ``batch_size / micro_batch_size`` micro-batches
            are accumulated. ``None`` means equal to ``batch_size``.
        seed: seeds torch/NumPy/Python and every epoch's data order.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (CUDA if available). bf16 autocast on CUDA, fp32 on CPU.
        num_workers: DataLoader workers.
        cache_features: compute frozen features once and read them from disk in later epochs.
        cache_dir: cache root (default ``$MEDAD_CACHE`` or ``~/.cache/medad``).
        compat: text class word rule for ``medad.models.prompt_word``; ``None`` is the model's own mode, and
            another mode than the model's is refused (see :func:`check_model_compat`).
        class_words: optional class-name -> word overrides for ``prompt_word``.
        resume: continue from the last complete checkpoint in ``out_dir`` (refused if its settings differ).
        progress: show tqdm progress bars.
        on_epoch_end: called as ``on_epoch_end(epoch, stats)`` after each epoch's checkpoint is on disk.
        distributed: under ``torchrun``, train on every rank with DDP over the adapters
            (:func:`medad.engine.distributed.training_hooks`): ``device`` ``None``/``cuda`` puts rank r on
            ``cuda:LOCAL_RANK``, the effective batch stays ``batch_size`` (each rank runs ``1/W`` of each batch's
            micro-batches), rank 0 writes the checkpoints and shows progress; gradients, steps and checkpoints
            equal those of one process. Without torchrun it is one process.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: bad settings, or ``out_dir`` holds a run with other settings.
        DataError: the manifest is empty or has rows without a 0/1 label.
    """
    from medad.data import make_dataset
    from medad.data.readers import check_files
    from medad.models import save_checkpoint

    hooks, device, progress = training_hooks(device, progress) if distributed else (OneProcess(), device, progress)
    manifest = concat_manifests(manifests)
    _check_settings(manifest, epochs, lr, batch_size, micro_batch_size, warmup_fraction)
    check_files(manifest)  # an unreadable image must stop training before the first step, naming the file
    dev = resolve_device(device)
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"

    seed_everything(seed)
    card = model.card()
    frozen_random = [part for part in card.get("random_parts", []) if part != "adapters"]
    if frozen_random:  # the adapters are what training fits; random frozen weights make the result a test only
        from medad.models.base import describe_random_parts

        warn_once(RANDOM_WEIGHTS_WARNING.format(name=card.get("name"), parts=describe_random_parts(frozen_random)))
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"model {card.get('name')!r} has no trainable parameters; nothing to train")
    compat = check_model_compat(model, compat)
    words = prompt_words(manifest, compat, class_words)
    warmup_steps = warmup_length(warmup_fraction, epochs * math.ceil(len(manifest) / batch_size), compat)
    settings = {
        "model": card.get("name"),
        "config": card.get("config"),
        "manifest_hash": manifest_fingerprint(manifest),
        "n_images": len(manifest),
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "betas": list(betas),
        "warmup_steps": warmup_steps,
        "batch_size": batch_size,
        "seed": seed,
        "compat": compat,
        "class_words": dict(class_words or {}),
        "words_used": class_words_used(manifest, words),
    }

    optimizer = torch.optim.AdamW(model.param_groups(lr), lr=lr, betas=betas, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant(warmup_steps, compat))
    start_epoch, step = 0, 0
    last = last_checkpoint(ckpt_root) if resume else None
    if last is not None:
        start_epoch, step = _restore(last, model, optimizer, scheduler, settings, dev)
    elif ckpt_root.exists() and any(ckpt_root.iterdir()):
        if resume:
            raise ConfigError(f"{ckpt_root} holds no complete checkpoint to resume; delete it or use another --out")
        if hooks.is_main:
            shutil.rmtree(ckpt_root)
    out.mkdir(parents=True, exist_ok=True)
    if hooks.is_main:
        write_json_atomic(out / "train_settings.json", settings)
    loop = _Loop(model, optimizer, scheduler, hooks, hooks.loss_fn(model), words, dev, batch_size,
                 micro_batch_size or batch_size, num_workers, progress)  # fmt: skip

    dataset: Dataset[Any] = make_dataset(manifest, model.image_size, model.mean, model.std)
    if cache_features and start_epoch < epochs:
        model.train()  # the features training reads, which a model may compute only in training mode
        root = Path(cache_dir) if cache_dir is not None else default_cache_root()
        cache = FeatureCache(root / "features" / feature_cache_key(model, manifest, autocast_dtype(dev)), len(manifest))
        with autocast(dev):
            hooks.build_cache(
                cache, dataset, model.forward_features, loop.micro, dev, num_workers=num_workers, progress=progress
            )
        dataset = CachedFeatureDataset(cache)

    history: list[dict[str, float]] = []
    checkpoint = last
    for epoch in range(start_epoch, epochs):
        model.set_epoch(epoch)
        stats, step = loop.epoch(dataset, epoch_order(seed, epoch, len(manifest)), f"epoch {epoch + 1}/{epochs}", step)
        model.mark_adapters_trained()  # the checkpoint's card must not flag its adapters as random
        stats.update(epoch=float(epoch + 1), steps=float(step), lr=float(scheduler.get_last_lr()[0]))
        history.append(stats)
        checkpoint = ckpt_root / f"epoch_{epoch + 1:03d}"
        if hooks.is_main:
            _save(ckpt_root, epoch + 1, model, optimizer, scheduler, step, settings, stats, save_checkpoint)
        hooks.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, stats)
    if checkpoint is None:
        raise ConfigError(f"{out} holds no checkpoint and epochs={epochs}; ask for at least one epoch")
    return TrainResult(checkpoint=checkpoint, epochs=epochs, steps=step, history=history, resumed_from=start_epoch)


@dataclass
class _Loop:
    """The optimiser loop of one :func:`train` call: one epoch of accumulated micro-batch steps at a time."""

    model: TrainableAnomalyModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    hooks: OneProcess | DDPTraining
    loss_fn: Callable[..., dict[str, Any]]
    words: list[str]
    dev: torch.device
    batch_size: int
    micro: int
    num_workers: int
    progress: bool

    def epoch(self, dataset: Dataset[Any], order: list[int], desc: str, step: int) -> tuple[dict[str, float], int]:
        """Run one epoch over ``order``; return the mean of each loss term over its micro-batches and the step."""
        from tqdm.auto import tqdm

        self.model.train()
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        # (micro-batch, loss weight, counts in the stats, last of its step), in the order this process runs them
        plan = [
            (part, weight, real, k == len(parts) - 1)
            for parts in (self.hooks.split(b, self.micro) for b in batches)
            for k, (part, weight, real) in enumerate(parts)
        ]
        pin = self.dev.type == "cuda"
        loader = DataLoader(dataset, batch_sampler=[p[0] for p in plan], num_workers=self.num_workers, pin_memory=pin)
        sums: dict[str, torch.Tensor] = {}
        n_micro = 0
        bar = tqdm(total=len(batches), desc=desc, unit="step", disable=not self.progress)
        self.optimizer.zero_grad(set_to_none=True)
        for sample, (_, weight, real, closes_step) in zip(loader, plan, strict=True):
            losses = self._micro_batch(sample, weight, closes_step)
            if real:  # summed on the device in float64: reading a loss each step would make the host wait
                n_micro += 1
                for name, value in losses.items():
                    term = torch.as_tensor(value).detach().double()
                    sums[name] = sums[name] + term if name in sums else term
            if closes_step:
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                if bar.n % LOSS_DISPLAY_EVERY == 0 or bar.n == len(batches):
                    bar.set_postfix(loss=f"{float(losses['total'].detach()):.4f}")
        bar.close()
        totals, n_micro = self.hooks.reduce({name: float(total) for name, total in sums.items()}, n_micro)
        return {name: total / n_micro for name, total in totals.items()}, step

    def _micro_batch(self, sample: Mapping[str, Any], weight: float, closes_step: bool) -> dict[str, Any]:
        """Forward and backward of one micro-batch (gradients all-reduced only when it closes a step)."""
        dev = self.dev
        indices = sample["index"].tolist()
        labels = sample["label"].to(dev, non_blocking=True)
        masks = sample["mask"].to(dev, non_blocking=True)
        with self.hooks.sync(closes_step):
            with autocast(dev):
                if "features" in sample:
                    features = _to_device(sample["features"], dev)
                else:
                    features = self.model.forward_features(sample["image"].to(dev, non_blocking=True))
                losses = self.loss_fn(features, [self.words[i] for i in indices], masks, labels)
            (losses["total"] * weight).backward()
        return losses


def _check_settings(
    manifest: pd.DataFrame,
    epochs: int,
    lr: float,
    batch_size: int,
    micro_batch_size: int | None,
    warmup_fraction: float,
) -> None:
    if len(manifest) == 0:
        raise DataError("the training manifest is empty; check the auxiliary dataset root and split")
    unlabeled = manifest["label"].isna()
    if unlabeled.any():
        bad = manifest.loc[unlabeled, "case_id"].iloc[0] if "case_id" in manifest else "?"
        raise DataError(
            f"{int(unlabeled.sum())} training rows have no 0/1 label (first: {bad}); train only on labelled "
            "auxiliary data (e.g. the test split of MVTec AD or VisA)"
        )
    if epochs < 0:
        raise ConfigError(f"epochs={epochs} must be >= 0")
    if not lr > 0:
        raise ConfigError(f"lr={lr} must be > 0")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if micro_batch_size is not None and (micro_batch_size < 1 or batch_size % micro_batch_size):
        raise ConfigError(
            f"micro_batch_size={micro_batch_size} must be >= 1 and divide batch_size={batch_size}; "
            "pick a divisor, e.g. 8, 16 or 32 for the default batch of 64"
        )
    if not 0 <= warmup_fraction <= 1:
        raise ConfigError(f"warmup_fraction={warmup_fraction} must be in [0, 1]")


def _save(
    root: Path,
    epoch: int,
    model: TrainableAnomalyModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    settings: Mapping[str, Any],
    stats: Mapping[str, float],
    save_checkpoint: Callable[..., Any],
) -> Path:
    final = root / f"epoch_{epoch:03d}"
    tmp = root / f".epoch_{epoch:03d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    extra = {
        "training": {
            "manifest_hash": settings["manifest_hash"],
            "seed": settings["seed"],
            "epoch": epoch,
            "epochs": settings["epochs"],
            "lr": settings["lr"],
            "steps": step,
            "batch_size": settings["batch_size"],
            "compat": settings["compat"],
            "class_words": settings["words_used"],
            "loss": stats.get("total"),
        }
    }
    save_checkpoint(model, tmp, extra=extra)
    with disk_errors(tmp / _STATE_FILE):
        torch.save(
            {
                "epoch": epoch,
                "step": step,
                "settings_hash": hash_config(settings),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
            },
            tmp / _STATE_FILE,
        )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _restore(
    folder: Path,
    model: TrainableAnomalyModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    settings: Mapping[str, Any],
    device: torch.device,
) -> tuple[int, int]:
    from safetensors.torch import load_file

    state = torch.load(folder / _STATE_FILE, map_location="cpu", weights_only=True)
    if state["settings_hash"] != hash_config(settings):
        raise ConfigError(
            f"{folder.parent} holds a run with other settings (model, data, lr, batch, seed or epochs); "
            "use another --out, or pass --no-resume to start over"
        )
    model.load_trainable_state_dict(load_file(str(folder / "adapters.safetensors"), device=str(device)))
    model.mark_adapters_trained()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["epoch"]), int(state["step"])


def train_on_roots(
    roots: Sequence[str | Path],
    out_dir: str | Path,
    *,
    kind: str = "auto",
    split: str = "test",
    model_name: str = "ad_dinov3",
    model_config: Mapping[str, Any] | None = None,
    reader_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> TrainResult:
    """Load auxiliary datasets from their public layouts, build a model and :func:`train` it (``medad train``).

    Args:
        roots: dataset roots (e.g. an MVTec AD and a VisA folder).
        out_dir: run folder.
        kind: dataset kind of every root for ``medad.data.load_manifest`` (``auto`` detects).
        split: the split to train on; ZSAD practice (and the reference code) uses the TEST split.
        model_name: registered model name.
        model_config: keyword configuration for ``medad.models.create_model`` (e.g. ``backbone_weights``,
            ``text_weights``); a ``compat`` option builds the model in that mode too.
        reader_options: options of the kind's reader for every root (e.g. ``images`` / ``masks`` folder names of
            ``--kind folder``: ``medad train --images-dir/--masks-dir``).
        **options: passed to :func:`train` (``epochs``, ``lr``, ``batch_size``, ``seed``, ``device``, ``compat``, ...).

    Returns:
        The :class:`TrainResult`.
    """
    from medad.data import load_manifest
    from medad.models import TrainableAnomalyModel, create_model

    if not roots:
        raise ConfigError("no auxiliary dataset given; pass --data ROOT (e.g. an MVTec AD or VisA folder)")
    manifests = [load_manifest(str(root), kind, split=split, **(reader_options or {})) for root in roots]
    config = dict(model_config or {})
    if options.get("compat") is not None:  # the model is built in the mode it is trained in
        config.setdefault("compat", options["compat"])
    model = create_model(model_name, **config)
    if not isinstance(model, TrainableAnomalyModel):  # the words train() uses for a model without adapters
        raise ConfigError(f"model {model_name!r} has no trainable parameters; nothing to train")
    return train(model, manifests, out_dir, **options)
