"""Where an evaluation's predictions came from, recorded in the evaluation folder (``predictions.json``), so that
``medad report EVAL_DIR`` can draw heatmaps without being told the folders again.

Folders are recorded relative to the evaluation folder (absolute when on another drive), so moving the output
tree as a whole keeps them found. Only output folders are recorded, never a source image path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from medad.utils.io import write_json_atomic

RECORD_NAME = "predictions.json"


def record_predictions(eval_dir: str | Path, predictions: Mapping[str, str | Path]) -> None:
    """Write ``predictions.json``: model name -> its predictions folder, relative to ``eval_dir``."""
    out = Path(eval_dir).absolute()
    folders: dict[str, str] = {}
    for model, folder in predictions.items():
        target = Path(folder).absolute()
        try:
            folders[str(model)] = os.path.relpath(target, out)
        except ValueError:  # another drive (Windows): keep it absolute
            folders[str(model)] = str(target)
    write_json_atomic(out / RECORD_NAME, {"predictions": folders})


def recorded_predictions(eval_dir: str | Path) -> dict[str, Path]:
    """The predictions folders an evaluation recorded that still exist (model name -> folder); empty when the
    evaluation recorded none (written by an older medad) or the record is unreadable."""
    record = Path(eval_dir) / RECORD_NAME
    try:
        folders = json.loads(record.read_text(encoding="utf-8")).get("predictions", {})
    except (OSError, ValueError, AttributeError):
        return {}
    found = {str(model): Path(eval_dir) / str(folder) for model, folder in dict(folders).items()}
    return {model: folder for model, folder in found.items() if (folder / "chunks").is_dir()}
