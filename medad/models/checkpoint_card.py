"""A checkpoint's ``card.json``, read without torch (``medad validate`` compares its compat mode with the
protocol's); :mod:`medad.models.checkpoint` writes and loads checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medad.errors import WeightsError

CARD_FILE = "card.json"
CHECKPOINT_FORMAT = "medad-adapters/1"


def read_card(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint's ``card.json``; raise :class:`WeightsError` when it is missing or broken."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise WeightsError(f"{str(path)!r} does not exist; pass a folder written by medad.models.save_checkpoint")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{str(path)!r} is not valid JSON ({exc}); re-save the checkpoint") from exc
    if not isinstance(card, dict) or card.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{str(path)!r} is not a {CHECKPOINT_FORMAT} card; re-save the checkpoint")
    return card


def checkpoint_compat(folder: str | os.PathLike[str]) -> str | None:
    """The compat mode a checkpoint was trained in; ``None`` when its card cannot be read (loading it says why)."""
    try:
        compat = read_card(folder).get("compat")
    except WeightsError:
        return None
    return str(compat) if compat is not None else None
