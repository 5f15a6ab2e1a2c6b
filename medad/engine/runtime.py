"""Where and how the engine runs: the device, the autocast precision and the random generators.

Every part that runs a model (training, scoring, protocols, benchmarks) resolves its device and precision here,
so that one rule holds everywhere: CUDA when available, bf16 autocast on CUDA and plain fp32 on CPU.
:func:`seed_everything` seeds a run; :func:`rng_state` / :func:`set_rng_state` save and restore every
generator, so a resumed training run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch

from medad.errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return the device to run on: the given one, else CUDA when available, else CPU.

    Raises:
        ConfigError: a CUDA device was asked for on a machine without one.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return resolved


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA; ``None`` (plain fp32) on CPU, where bf16 autocast is several times slower."""
    return torch.bfloat16 if device.type == "cuda" else None


def autocast(device: torch.device) -> torch.autocast:
    """The autocast context for ``device``: bf16 on CUDA, disabled (fp32) on CPU."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict[str, Any]:
    """The state of every random generator (torch, CUDA, NumPy, Python) as tensors and plain values.

    NumPy's key array is stored as an int64 tensor so the whole state loads with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *map(float, (pos, has_gauss, cached))],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators from a :func:`rng_state` (CUDA only where it was saved and is available)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
