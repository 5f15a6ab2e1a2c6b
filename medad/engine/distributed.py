"""Several GPUs with ``torchrun``: sharded scoring and data-parallel training of the adapters.

Every function here reads the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins it on first use (NCCL on GPUs, gloo on CPU). Without
those variables (one process) they do exactly what the single-process functions do.

Scoring (``score(..., distributed=True)``, ``score_files(..., distributed=True)``, ``torchrun ... -m medad.cli
score``; :class:`ScoreShard`): each rank scores a disjoint shard of the manifest into the SAME predictions folder
under its own writer tag ``r<rank>``; after a barrier rank 0 checks that every manifest index is stored exactly
once (the reader refuses duplicates) and writes the tables. A resumed run skips indices already stored by any
writer, whatever the number of ranks was before.

Training (``train(..., distributed=True)``, :func:`training_hooks`): :class:`DDPTraining` plugs into
:func:`medad.engine.train.train` in place of :class:`OneProcess`. Each
global batch is cut into the same micro-batches as in one process, and rank ``r`` runs micro-batches ``r, r+W,
...``; only a small module holding the trainable adapters is wrapped in ``DistributedDataParallel`` (the frozen
backbone is never wrapped or broadcast). Each loss is weighted by ``W * len(micro) / len(batch)``, so the
all-reduce AVERAGE of the ranks' accumulated gradients is exactly the single-process accumulated gradient. A
rank with fewer micro-batches in a step runs a zero-weighted pass so that every rank joins each all-reduce.
Rank 0 writes the checkpoints; every rank waits for them at the end of each epoch. Checkpoints are the same
as those of a single-process run, so a run can be resumed with another number of GPUs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medad.engine.features import FeatureCache
from medad.engine.predictions import PredictionReader
from medad.engine.runtime import resolve_device
from medad.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medad.models import TrainableAnomalyModel

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 for one process).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU ``cuda:<local_rank>``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes shared files)."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def is_main_process() -> bool:
    """True unless this is a torchrun rank other than 0 (for printing and writing once)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def rank_device(device: str | torch.device | None, env: DistEnv) -> torch.device:
    """The device of this rank: ``None`` or ``cuda`` become ``cuda:<local_rank>`` (CPU without CUDA).

    Raises:
        ConfigError: a device index was given with several ranks (they would all share one GPU).
    """
    resolved = resolve_device(device)
    if env.world_size == 1 or resolved.type != "cuda":
        return resolved
    if device is not None and torch.device(device).index is not None:
        raise ConfigError(
            f"device {device!r} names one GPU, but {env.world_size} torchrun ranks would all use it; "
            "give --device cuda (rank r uses cuda:LOCAL_RANK)"
        )
    return torch.device("cuda", env.local_rank)


def init(device: str | torch.device | None = None, backend: str | None = None) -> DistEnv:
    """Join the torchrun process group (idempotent) and return this process's :class:`DistEnv`.

    Args:
        device: the device the work will run on; picks the backend (NCCL for CUDA, gloo otherwise).
        backend: force a backend.

    Raises:
        ConfigError: ``WORLD_SIZE`` > 1 but a rendezvous variable is missing.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank)
    if not launched():
        return DistEnv()
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; start the command with "
            "`torchrun --nproc_per_node N ...` (see docs/scaling.md)"
        )
    env = DistEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank)
    dev = rank_device(device, env)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    return env


def barrier() -> None:
    """Wait for every rank (nothing with one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard_indices(n_items: int, rank: int, world_size: int, mode: str = "strided") -> list[int]:
    """The manifest indices of one rank: disjoint, and together all of ``0..n_items-1``.

    Args:
        n_items: manifest length.
        rank: this rank.
        world_size: number of ranks.
        mode: ``strided`` (``rank, rank+W, ...``: mixes classes and image sizes evenly) or ``contiguous``
            (balanced blocks: each rank reads neighbouring files).
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}")
    if mode == "strided":
        return list(range(rank, n_items, world_size))
    if mode == "contiguous":
        base, extra = divmod(n_items, world_size)
        start = rank * base + min(rank, extra)
        return list(range(start, start + base + (rank < extra)))
    raise ConfigError(f"shard mode {mode!r} is not 'strided' or 'contiguous'")


# ---------------------------------------------------------------- scoring


def _broadcast_trainable(model: nn.Module) -> None:
    """Give every rank rank 0's trainable parameters (e.g. randomly initialised adapters of a demo model)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                dist.broadcast(param.data, src=0)


def _agree(message: str | None) -> None:
    """Raise rank 0's verdict on every rank (``None``: all good)."""
    box = [message]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise DataError(box[0])


def check_complete(folder: str | Path, n_items: int) -> str | None:
    """Why a predictions folder does not hold every index ``0..n_items-1`` exactly once, an unreadable image
    recorded as skipped by any rank counting as done (``None`` if it does)."""
    try:
        reader = PredictionReader(folder)
        indices = reader.indices
    except DataError as exc:  # an index written twice
        return str(exc)
    skipped = {int(entry["index"]) for entry in reader.skipped}
    missing = sorted(set(range(n_items)) - set(indices.tolist()) - skipped)
    extra = sorted(set(indices.tolist()) - set(range(n_items)))
    if missing or extra:
        return (
            f"{folder}: after scoring, {len(missing)} manifest indices are missing (first {missing[:5]}) and "
            f"{len(extra)} are unexpected (first {extra[:5]}); delete the folder and score again"
        )
    return None


@dataclass(frozen=True)
class ScoreShard:
    """One rank's part of ``score(..., distributed=True)``: its device, writer tag and manifest indices.

    With one process (no torchrun) the tag and indices are the single-process ones (``p0``, every row), and
    :meth:`finish` only checks that the folder holds every index once.
    """

    env: DistEnv
    device: torch.device
    shard: str = "strided"

    @classmethod
    def join(cls, device: str | torch.device | None, shard: str = "strided") -> ScoreShard:
        """Join the torchrun process group (if launched) and return this rank's share of the scoring."""
        env = init(device)
        return cls(env, rank_device(device, env), shard)

    @property
    def tag(self) -> str:
        """The predictions writer tag of this rank (``r<rank>``; ``p0`` for one process)."""
        return "p0" if self.env.world_size == 1 else f"r{self.env.rank}"

    def indices(self, n_items: int) -> list[int] | None:
        """The manifest indices this rank scores (``None``: all of them, one process)."""
        if self.env.world_size == 1:
            return None
        return shard_indices(n_items, self.env.rank, self.env.world_size, self.shard)

    def prepare(self, model: nn.Module) -> None:
        """Move the model to this rank's device and give it rank 0's trainable parameters (several ranks only)."""
        if self.env.world_size > 1:
            model.to(self.device)
            _broadcast_trainable(model)

    def finish(self, folder: str | Path, n_items: int) -> None:
        """Wait for every rank, then raise on every rank if some index is missing or stored twice.

        Raises:
            DataError: the folder does not hold every index ``0..n_items-1`` exactly once (an image some rank
                recorded as unreadable counts as done: it is reported by ``reader.skipped``).
        """
        if self.env.world_size == 1:
            _agree(check_complete(folder, n_items))
            return
        barrier()
        _agree(check_complete(folder, n_items) if self.env.is_main else None)


# ---------------------------------------------------------------- training


class OneProcess:
    """How :func:`medad.engine.train.train` shares its work between processes: one process does all of it.

    :class:`DDPTraining` is the ``torchrun`` counterpart with the same methods.
    """

    is_main = True

    def split(self, batch: list[int], micro: int) -> list[tuple[list[int], float, bool]]:
        """This process's micro-batches of one global batch: ``(indices, loss weight, counts in the stats)``."""
        parts = [batch[s : s + micro] for s in range(0, len(batch), micro)]
        return [(part, len(part) / len(batch), True) for part in parts]

    def loss_fn(self, model: TrainableAnomalyModel) -> Callable[..., dict[str, Any]]:
        """``loss_fn(features, words, masks, labels) -> losses`` through the trainable head."""
        return lambda features, words, masks, labels: model.compute_loss(
            model.forward_head(features, words), masks, labels
        )

    def sync(self, last: bool) -> AbstractContextManager[None]:
        """Context of one micro-batch's forward and backward (``last``: the step's final one)."""
        return contextlib.nullcontext()

    def reduce(self, sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
        """Loss sums and micro-batch count over all processes."""
        return sums, count

    def build_cache(self, cache: FeatureCache, *args: Any, **kwargs: Any) -> None:
        """Compute the missing feature chunks (``FeatureCache.build`` arguments)."""
        cache.build(*args, **kwargs)

    def barrier(self) -> None:
        """Wait for every process."""


class _Adapters(nn.Module):
    """What DDP wraps: the model's trainable parameters only; the forward runs the model's head and loss.

    The model itself is held outside the module tree, so DDP neither broadcasts nor reduces the frozen
    backbone or text tower.
    """

    def __init__(self, model: TrainableAnomalyModel) -> None:
        super().__init__()
        self.trainable = nn.ParameterList([p for p in model.parameters() if p.requires_grad])
        self._model: tuple[TrainableAnomalyModel] = (model,)

    def forward(
        self, features: Any, words: list[str], masks: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        model = self._model[0]
        return model.compute_loss(model.forward_head(features, words), masks, labels)


class DDPTraining:
    """The torchrun plug-in of :func:`medad.engine.train.train` (the ``distributed=`` argument).

    Args:
        env: this process's rank and world size (the process group must be initialised).
        device: this rank's device.
    """

    def __init__(self, env: DistEnv, device: torch.device) -> None:
        self.env = env
        self.device = device
        self.is_main = env.is_main
        self._ddp: DistributedDataParallel | None = None

    def split(self, batch: list[int], micro: int) -> list[tuple[list[int], float, bool]]:
        """Micro-batches ``rank, rank+W, ...`` of the single-process cut, weighted so the average is the sum."""
        world = self.env.world_size
        parts = [batch[s : s + micro] for s in range(0, len(batch), micro)]
        mine = [(part, world * len(part) / len(batch), True) for part in parts[self.env.rank :: world]]
        rounds = -(-len(parts) // world)
        # every rank joins every all-reduce: a rank short of micro-batches runs a pass that adds nothing
        mine += [(parts[0], 0.0, False)] * (rounds - len(mine))
        return mine

    def loss_fn(self, model: TrainableAnomalyModel) -> Callable[..., dict[str, Any]]:
        """Wrap the adapters in DDP (rank 0's values are broadcast) and return the loss through it."""
        module = _Adapters(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters: `reference` adapters register an fc2 that never gets a gradient
        self._ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
        return self._ddp

    def sync(self, last: bool) -> AbstractContextManager[None]:
        """All-reduce the accumulated gradients only in the step's last backward pass."""
        assert self._ddp is not None, "loss_fn() first"
        return contextlib.nullcontext() if last else self._ddp.no_sync()

    def reduce(self, sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
        """Sum the loss statistics over ranks (every rank logs the same epoch means)."""
        names = sorted(sums)
        values = torch.tensor([sums[n] for n in names] + [float(count)], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return {n: float(v) for n, v in zip(names, values[:-1].tolist(), strict=True)}, int(values[-1])

    def build_cache(self, cache: Any, *args: Any, **kwargs: Any) -> None:
        """Each rank computes its share of the missing feature chunks, then all wait for the whole cache."""
        mine = [k for k in cache.missing_chunks() if k % self.env.world_size == self.env.rank]

        class _Share(FeatureCache):
            def missing_chunks(self) -> list[int]:
                return [k for k in mine if not self.chunk_path(k).exists()]

        _Share(cache.folder, cache.n_items, cache.chunk_size).build(*args, **kwargs)
        barrier()

    def barrier(self) -> None:
        """Wait for every rank."""
        barrier()


def training_hooks(
    device: str | torch.device | None, progress: bool
) -> tuple[OneProcess | DDPTraining, torch.device, bool]:
    """What ``train(..., distributed=True)`` runs with: the hooks, this rank's device and its progress flag.

    Joins the torchrun process group; with one process (no torchrun) the hooks are :class:`OneProcess`. Only
    rank 0 shows progress.
    """
    env = init(device)
    dev = rank_device(device, env)
    if env.world_size == 1:
        return OneProcess(), dev, progress
    return DDPTraining(env, dev), dev, progress and env.is_main


def cleanup() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DDPTraining",
    "DistEnv",
    "OneProcess",
    "ScoreShard",
    "barrier",
    "check_complete",
    "cleanup",
    "init",
    "is_main_process",
    "launched",
    "rank_device",
    "shard_indices",
    "training_hooks",
]
