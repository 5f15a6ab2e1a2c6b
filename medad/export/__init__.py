"""Clinician review exports: thresholds, PNG / NIfTI / DICOM SEG / Parametric Map writers, an offline
review gallery and PS3.15 de-identification of the DICOM objects.

Entry points: :func:`export_predictions` (library), :func:`export_run` (what ``medad export`` and
``medad score --export`` call), and the threshold helpers.
"""

from medad.export.deid import Deidentifier
from medad.export.exporter import (
    FORMATS,
    export_notices,
    export_predictions,
    export_run,
    export_summary,
    parse_formats,
)
from medad.export.manifest import find_run_manifest, load_manifest_file, manifest_for_run, predictions_folder
from medad.export.resolve import optimal_from_predictions, percentile_from_predictions, resolve_threshold
from medad.export.thresholds import Threshold, fixed_threshold, optimal_threshold, percentile_threshold

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
