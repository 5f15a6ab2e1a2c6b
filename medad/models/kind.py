"""What a model is to the engine (:class:`ModelKind`), in a module without torch so the catalogue can say it."""

from __future__ import annotations

import enum


class ModelKind(str, enum.Enum):
    """How a model learns, which decides how the engine trains and scores it."""

    TRAINABLE = "trainable"
    TRAINING_FREE = "training-free"
    TRANSDUCTIVE = "transductive"
