"""Clinician review exports: thresholds, PNG / NIfTI / DICOM SEG / Parametric Map writers, an offline
review gallery and PS3.15 de-identification of the DICOM objects.

Entry points: :func:`export_predictions` (library), :func:`export_run` (what ``medad export`` and
``medad score --export`` call), and the threshold helpers. Names are imported on first use (PEP 562), so
reading the format names (``medad validate``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES = {
    "Deidentifier": "deid",
    "FORMATS": "formats",
    "Threshold": "thresholds",
    "export_notices": "exporter",
    "export_predictions": "exporter",
    "export_run": "exporter",
    "export_summary": "exporter",
    "find_run_manifest": "manifest",
    "fixed_threshold": "thresholds",
    "load_manifest_file": "manifest",
    "manifest_for_run": "manifest",
    "optimal_from_predictions": "resolve",
    "optimal_threshold": "thresholds",
    "parse_formats": "exporter",
    "percentile_from_predictions": "resolve",
    "percentile_threshold": "thresholds",
    "predictions_folder": "manifest",
    "resolve_threshold": "resolve",
}
"""Public name -> the module of ``medad.export`` that defines it."""

__all__ = [
    "FORMATS",
    "Deidentifier",
    "Threshold",
    "export_notices",
    "export_predictions",
    "export_run",
    "export_summary",
    "find_run_manifest",
    "fixed_threshold",
    "load_manifest_file",
    "manifest_for_run",
    "optimal_from_predictions",
    "optimal_threshold",
    "parse_formats",
    "percentile_from_predictions",
    "percentile_threshold",
    "predictions_folder",
    "resolve_threshold",
]

if TYPE_CHECKING:
    from medad.export.deid import Deidentifier
    from medad.export.exporter import (
        export_notices,
        export_predictions,
        export_run,
        export_summary,
        parse_formats,
    )
    from medad.export.formats import FORMATS
    from medad.export.manifest import find_run_manifest, load_manifest_file, manifest_for_run, predictions_folder
    from medad.export.resolve import optimal_from_predictions, percentile_from_predictions, resolve_threshold
    from medad.export.thresholds import Threshold, fixed_threshold, optimal_threshold, percentile_threshold


def __getattr__(name: str) -> Any:
    """Import a public name on first access."""
    if name not in _NAMES:
        raise AttributeError(f"module 'medad.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medad.export.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_NAMES})
