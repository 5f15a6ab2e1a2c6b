"""medad: zero-shot lesion and anomaly detection for medical images.

The public API is organised by concern: :mod:`medad.data` (datasets and loaders), :mod:`medad.models`
(model registry and ``create_model``), :mod:`medad.engine` (training and batched scoring),
:mod:`medad.evaluation` (metrics and statistics over predictions), :mod:`medad.metrics`, :mod:`medad.stats`,
:mod:`medad.reports`, :mod:`medad.export` and :mod:`medad.protocols`.

The few entry points most scripts need are also here, e.g. ``medad.create_model`` and ``medad.load_manifest``.
They are imported on first use (PEP 562), so ``import medad`` (and ``medad --help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_ENTRY_POINTS: dict[str, str] = {
    "create_model": "medad.models",
    "list_models": "medad.models",
    "load_checkpoint": "medad.models",
    "load_manifest": "medad.data",
    "manifest_from_paths": "medad.data",
    "make_dataset": "medad.data",
    "train": "medad.engine",
    "score": "medad.engine",
    "evaluate": "medad.evaluation",
    "run_protocol": "medad.protocols",
}
"""Top-level name -> the package that defines it (the name is looked up there on first use)."""

__all__ = [
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "load_checkpoint",
    "load_manifest",
    "make_dataset",
    "manifest_from_paths",
    "run_protocol",
    "score",
    "train",
]

if TYPE_CHECKING:
    from medad.data import load_manifest, make_dataset, manifest_from_paths
    from medad.engine import score, train
    from medad.evaluation import evaluate
    from medad.models import create_model, list_models, load_checkpoint
    from medad.protocols import run_protocol


def __getattr__(name: str) -> Any:
    """Import an entry point on first access (``medad.create_model`` -> ``medad.models.create_model``)."""
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module 'medad' has no attribute {name!r}")
    value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy entry points included."""
    return sorted({*globals(), *_ENTRY_POINTS})
