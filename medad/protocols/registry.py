"""The allow-lists a protocol is checked against, read from the parts that own them.

A protocol can only name dataset kinds, synthetic layouts, models, metrics and export formats that medad
registers; nothing named in a YAML is imported or instantiated by name otherwise.
"""

from __future__ import annotations


def dataset_kinds() -> list[str]:
    """Dataset kinds ``medad.data.load_manifest`` reads (plus ``auto``)."""
    from medad.data import KINDS

    return sorted(KINDS)


def synthetic_layouts() -> list[str]:
    """Layouts ``medad.data.synthetic.write_layout`` can write."""
    from medad.data import LAYOUTS

    return list(LAYOUTS)


def model_names() -> list[str]:
    """Registered model names (``medad.models.create_model``)."""
    from medad.models import list_models

    return list_models()


def is_training_free(name: str) -> bool:
    """Whether a registered model has nothing to train (no `training:` or `checkpoint:` needed)."""
    from medad.models import is_training_free as _is_training_free

    return _is_training_free(name)


def metric_names() -> list[str]:
    """Metric names the evaluation computes."""
    from medad.engine.evaluate import ALL_METRICS

    return list(ALL_METRICS)


def export_formats() -> list[str]:
    """Export formats of ``medad.export.export_predictions``."""
    from medad.export import FORMATS

    return list(FORMATS)
