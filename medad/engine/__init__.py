"""Training loop, batched scoring, evaluation and the on-disk predictions store.

Public entry points: :func:`train`, :func:`score`, :func:`score_files`, :func:`evaluate`, and the predictions
store (:class:`PredictionWriter`, :class:`PredictionReader`).
"""

from medad.engine.evaluate import evaluate
from medad.engine.predictions import PredictionReader, PredictionWriter
from medad.engine.scorer import score, score_files
from medad.engine.train import train

__all__ = ["PredictionReader", "PredictionWriter", "evaluate", "score", "score_files", "train"]
