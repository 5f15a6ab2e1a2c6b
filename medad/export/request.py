"""What ``medad score --export`` would refuse only after scoring every image, refused before it starts."""

from __future__ import annotations

from pathlib import Path

from medad.errors import ExportError
from medad.export.exporter import parse_formats
from medad.export.manifest import predictions_folder
from medad.export.thresholds import check_threshold_spec
from medad.utils.locking import check_output_folder


def check_score_request(out: str | Path, export: str | None, threshold: str) -> None:
    """What ``medad score`` would refuse only after scoring every image, refused before it starts.

    Raises:
        OutputPathError: ``--out`` is a file, lies under one, or cannot be written.
        ExportError: an unknown ``--export`` format, or a ``--threshold`` that does not parse, is impossible
            (``fixed:-1``) or names a folder that holds no predictions.
    """
    check_output_folder(out, "--out", "give a folder path (one that exists or can be made)")
    if not export:
        return
    try:
        parse_formats(export)
    except ExportError as exc:
        raise ExportError(f"--export: {exc}") from None
    rule, rest = check_threshold_spec(threshold)
    folder = rest.partition(":")[2] if rule == "percentile" else rest if rule in ("f1", "youden") else ""
    if folder and not (predictions_folder(folder) / "chunks").is_dir():
        raise ExportError(
            f"--threshold {threshold!r}: {folder} is not a predictions folder (no chunks/ inside); score those "
            "images first (`medad score ... --out DIR`) and pass DIR"
        )
