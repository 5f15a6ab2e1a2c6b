"""Evaluation of stored predictions: metrics with bootstrap intervals, curves, paired comparisons, typed rows.

Public entry point: :func:`evaluate` (what ``medad eval`` and protocol runs call). The rows it writes are typed
in :mod:`medad.evaluation.rows`, which readers such as :mod:`medad.reports` import.
"""

from medad.evaluation.evaluate import evaluate
from medad.evaluation.rows import ALL_METRICS, MetricRow

__all__ = ["ALL_METRICS", "MetricRow", "evaluate"]
