"""The allow-lists a protocol is checked against, read from the parts that own them.

A protocol can only name dataset kinds, synthetic layouts, models, metrics and export formats that medad
registers; nothing named in a YAML is imported or instantiated by name otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medad.models import ModelKind


def dataset_kinds() -> list[str]:
    """Dataset kinds ``medad.data.load_manifest`` reads (plus ``auto``)."""
    from medad.data import list_datasets

    return sorted([*list_datasets(), "auto"])


def synthetic_layouts() -> list[str]:
    """Layouts ``medad.data.write_layout`` can write."""
    from medad.data import list_layouts

    return list_layouts()


def model_names() -> list[str]:
    """Registered model names (``medad.models.create_model``)."""
    from medad.models import list_models

    return list_models()


def model_kind(name: str) -> ModelKind:
    """Whether a registered model is trainable (needs `training:` or `checkpoint:`), training-free or transductive."""
    from medad.models import model_kind as _model_kind

    return _model_kind(name)


def metric_names() -> list[str]:
    """Metric names the evaluation computes."""
    from medad.evaluation.rows import ALL_METRICS

    return list(ALL_METRICS)


def export_formats() -> list[str]:
    """Export formats of ``medad.export.export_predictions``."""
    from medad.export.formats import FORMATS

    return list(FORMATS)


def check_threshold(spec: str) -> None:
    """Refuse a threshold spec that ``resolve_threshold`` would refuse (syntax and values; no folder is read)."""
    from medad.export.thresholds import check_threshold_spec

    check_threshold_spec(spec)


def check_model_options(name: str, kwargs: Mapping[str, Any]) -> None:
    """Check ``create_model(name, **kwargs)``'s configuration without building the model or loading weights
    (``medad.models.check_model_config``: the model's own config class, then its architecture check).

    Raises:
        ConfigError: naming the option and the fix.
    """
    from medad.models import check_model_config

    check_model_config(name, **kwargs)


def class_word_problem(word: str) -> str | None:
    """Why a class word cannot be used in a text prompt (longer than the text encoder's context), or ``None``."""
    from medad.models.prompts import class_word_problem as _problem

    return _problem(word)


def checkpoint_compat(folder: Path) -> str | None:
    """The compat mode a checkpoint folder was trained in (``None`` when its card cannot be read)."""
    from medad.models.checkpoint_card import checkpoint_compat as _compat

    return _compat(folder)
