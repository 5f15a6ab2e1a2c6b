"""Manifests saved beside predictions: find and load them with the contract's dtypes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.errors import ExportError

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
_INT_COLUMNS = ("label", "frame", "slice_axis")


def load_manifest_file(path: str | Path) -> pd.DataFrame:
    """Read a manifest saved as CSV or Parquet, restoring the contract's dtypes.

    Raises:
        ExportError: if the file is missing or lacks the columns the export needs.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(
            f"manifest {path} does not exist; pass the manifest the predictions were scored from with --manifest"
        )
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in _INT_COLUMNS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce").astype("Int64")
    missing = [c for c in ("image_path", "source_format") if c not in frame]
    if missing:
        raise ExportError(f"manifest {path} lacks column(s) {missing}; re-create it with medad.data")
    return frame.reset_index(drop=True)


def predictions_folder(run_dir: str | Path) -> Path:
    """Return the predictions folder of ``run_dir``: itself, or its ``predictions/`` (a ``medad score`` output)."""
    run_dir = Path(run_dir)
    nested = run_dir / "predictions"
    return nested if not (run_dir / "chunks").is_dir() and (nested / "chunks").is_dir() else run_dir


def find_run_manifest(run_dir: str | Path) -> Path | None:
    """Return the manifest saved with a predictions folder, if any: first the one with source paths in a
    ``private/`` folder beside it (:func:`medad.engine.predictions.find_private_manifest`), else a
    ``manifest.csv`` / ``manifest.parquet`` with source paths in it, in its ``predictions/`` or in its parent."""
    from medad.engine.predictions import find_private_manifest

    folder = predictions_folder(run_dir)
    private = find_private_manifest(folder)
    if private is not None:
        return private
    for place in (folder, folder.parent):
        for name in MANIFEST_NAMES:
            if (place / name).is_file() and _has_paths(place / name):
                return place / name
    return None


def _has_paths(path: Path) -> bool:
    """Whether a saved manifest names its sources (a shareable copy has its path columns blanked)."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    return "image_path" in frame and bool((frame["image_path"].astype(str) != "").any())


def manifest_for_run(run_dir: str | Path, manifest_path: str | Path | None = None) -> pd.DataFrame:
    """Return the manifest of a predictions folder: ``manifest_path`` if given, else the one saved inside.

    Raises:
        ExportError: if neither exists.
    """
    if manifest_path is not None:
        return load_manifest_file(manifest_path)
    found = find_run_manifest(run_dir)
    if found is None:
        raise ExportError(
            f"{run_dir} holds no manifest.csv / manifest.parquet; pass the manifest the "
            "predictions were scored from with --manifest PATH"
        )
    return load_manifest_file(found)
