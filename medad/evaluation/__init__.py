"""Evaluation of stored predictions: metrics with bootstrap intervals, curves, paired comparisons, typed rows.

Public entry point: :func:`evaluate` (what ``medad eval`` and protocol runs call). The rows it writes are typed
in :mod:`medad.evaluation.rows`, which readers such as :mod:`medad.reports` import. Names are imported on first
use (PEP 562), so reading the metric names (``medad validate``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES = {"ALL_METRICS": "rows", "MetricRow": "rows", "evaluate": "evaluate"}
"""Public name -> the module of ``medad.evaluation`` that defines it."""

__all__ = ["ALL_METRICS", "MetricRow", "evaluate"]

if TYPE_CHECKING:
    from medad.evaluation.evaluate import evaluate
    from medad.evaluation.rows import ALL_METRICS, MetricRow


def __getattr__(name: str) -> Any:
    """Import a public name on first access."""
    if name not in _NAMES:
        raise AttributeError(f"module 'medad.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medad.evaluation.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_NAMES})
