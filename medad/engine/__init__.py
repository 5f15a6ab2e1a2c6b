"""Training loop, batched scoring and the on-disk predictions store.

Public entry points: :func:`train`, :func:`score`, :func:`score_files` (with their typed request,
:class:`ScoreRequest` / :class:`ScoreSettings`), and the predictions store (:class:`PredictionWriter`,
:class:`PredictionReader`). Evaluation lives in :mod:`medad.evaluation`.
"""

from medad.engine.predictions import PredictionReader, PredictionWriter
from medad.engine.request import ScoreRequest, ScoreSettings
from medad.engine.scorer import score, score_files
from medad.engine.train import train

__all__ = [
    "PredictionReader",
    "PredictionWriter",
    "ScoreRequest",
    "ScoreSettings",
    "score",
    "score_files",
    "train",
]
