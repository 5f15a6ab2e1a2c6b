"""Carry predictions over to a changed manifest: when files were only removed or added, keep what was scored.

:func:`carry_over` moves the predictions of the images an old and a new manifest share to their new indices
(staged in ``.carry/`` and swapped in by renames); :func:`finish_carry_over` completes a swap a crash
interrupted. Images are matched by path-free keys (``case_id``, frame, slice axis, format, class).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medad.engine.predictions import PredictionReader, PredictionWriter
from medad.engine.skipped import SKIPPED_GLOB
from medad.utils.io import atomic_open, write_json_atomic
from medad.utils.privacy import shareable_manifest

_MATCH_COLUMNS = ("case_id", "frame", "slice_axis", "source_format", "class_name")  # case_id: keyed, path-free


def _keys(manifest: pd.DataFrame) -> list[tuple[str, ...]]:
    columns = [c for c in _MATCH_COLUMNS if c in manifest.columns]
    return [tuple("" if pd.isna(v) else str(v) for v in row) for row in manifest[columns].itertuples(index=False)]


def saved_manifest(folder: Path) -> Path | None:
    """The shareable manifest a scoring run saved beside its predictions (``manifest.csv``: case ids, no paths)."""
    path = folder / "manifest.csv"
    return path if path.is_file() else None


def carry_over(folder: Path, new: pd.DataFrame, meta: dict[str, Any]) -> bool:
    """Move the predictions scored for the manifest saved beside them to ``new``'s indices.

    Used when the inputs changed only by removing or adding files (e.g. a skipped file removed): every image of
    ``new`` that the old manifest also holds keeps its prediction, under its new index; the rest is scored by the
    run. The new chunks, ``meta.json`` and manifest are staged in ``.carry/`` and swapped in by renames, so a
    crash leaves either set whole (:func:`finish_carry_over` completes an interrupted swap).

    Returns:
        Whether any prediction was carried over (``False``: no saved manifest or nothing in common).
    """
    manifest_path = saved_manifest(folder)
    if manifest_path is None:
        return False
    old = pd.read_csv(manifest_path, keep_default_na=False, dtype=str)
    reader = PredictionReader(folder)
    old_index = {key: i for i, key in enumerate(_keys(old))}
    scored = set(reader.indices.tolist())
    by_old = {old_index[key]: j for j, key in enumerate(_keys(new)) if old_index.get(key) in scored}
    if not by_old:
        return False
    staging = folder / ".carry"
    shutil.rmtree(staging, ignore_errors=True)
    writer = PredictionWriter(staging, tag="c0")
    for old_i, pixel_map in reader.iter_maps(sorted(by_old)):
        pos = int(np.searchsorted(reader.indices, old_i))
        writer.add([by_old[old_i]], [float(reader.image_scores[pos])], [pixel_map])
    writer.close()
    write_json_atomic(staging / "meta.json", meta)
    relative = manifest_path.relative_to(folder)
    with atomic_open(staging / relative.name, "w") as handle:
        handle.write(shareable_manifest(new).to_csv(index=False, lineterminator="\n"))
    write_json_atomic(staging / "COMPLETE", {"manifest": str(relative)})
    finish_carry_over(folder)
    return True


def finish_carry_over(folder: Path) -> None:
    """Complete a :func:`carry_over` swap that a crash interrupted, or drop an unfinished staging (no-op when
    there is none). Every step can be repeated, so a crash inside this function is recovered too."""
    carry, retired, chunks = folder / ".carry", folder / ".chunks.old", folder / "chunks"
    if (carry / "COMPLETE").is_file():
        manifest = Path(json.loads((carry / "COMPLETE").read_text(encoding="utf-8"))["manifest"])
        if (carry / "chunks").is_dir():
            if chunks.exists():
                shutil.rmtree(retired, ignore_errors=True)
                chunks.rename(retired)
            (carry / "chunks").rename(chunks)
        if (carry / "meta.json").is_file():
            (carry / "meta.json").replace(folder / "meta.json")
        if (carry / manifest.name).is_file():
            (carry / manifest.name).replace(folder / manifest)
        for path in folder.glob(SKIPPED_GLOB):
            path.unlink()
        (carry / "COMPLETE").unlink()
    elif retired.exists() and not chunks.exists():
        retired.rename(chunks)
    shutil.rmtree(retired, ignore_errors=True)
    shutil.rmtree(carry, ignore_errors=True)
