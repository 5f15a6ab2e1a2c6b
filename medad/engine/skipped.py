"""Scoring goes on past an unreadable image: it is skipped, recorded with its reason, and the rest is scored.

A predictions folder holds, next to ``chunks/``, one ``skipped-<tag>.json`` per writer::

    {"skipped": [{"index": 3, "case_id": "c1a2...", "reason": "image cannot be decoded (...)"}]}

The shareable file names an image only by manifest index and pseudonymous ``case_id``, and its reason has the
source path removed. On stderr a plain image file is named by its path, so that it can be found and fixed; a DICOM
or NIfTI source (whose names and folders often hold a patient's name or id) only by its case id and the private
manifest that maps it to its file, with ``--deidentify`` or not. Reading warnings of such a source are re-issued
by case id too. A re-run retries every skipped image (it is not a
prediction), so fixing the file and re-running fills the gap; removing the file changes the manifest, and
:func:`carry_over` moves the predictions already made to the new manifest's indices so they are not recomputed.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from medad.errors import DataError, DataWarning, MedadError, as_medad_error, printable
from medad.utils.io import write_json_atomic
from medad.utils.privacy import PRIVATE

SKIPPED_GLOB = "skipped-*.json"
_SKIP_KEY = "__medad_skipped__"


class SkippingSubset(Dataset):
    """``Subset(dataset, indices)`` whose items that fail with a file error (a :class:`DataError`, also when a
    library wraps it) come back as a skip marker instead of ending the DataLoader; other errors still raise.

    Given the ``manifest``, a :class:`DataWarning` raised while reading a DICOM / NIfTI row (a repair, such as NaN
    voxels) is re-issued naming the row's case id instead of its source path (:func:`private_source`)."""

    def __init__(self, dataset: Any, indices: Sequence[int], manifest: pd.DataFrame | None = None) -> None:
        from medad.data.readers import max_pixels

        max_pixels()  # a bad MEDAD_MAX_IMAGE_PIXELS is refused before any image is read, not once per image
        self.dataset = dataset
        self.indices = list(indices)
        self.private = _private_rows(manifest) if manifest is not None else {}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.indices[k]
        try:
            with _case_named_warnings(self.private.get(index)):
                return self.dataset[index]
        except Exception as exc:
            error = as_medad_error(exc)
            if not isinstance(error, DataError):
                raise
            return {_SKIP_KEY: (index, str(error))}


def private_source(row: Any) -> bool:
    """Whether a manifest row's source path must not be printed: a DICOM or NIfTI file, whose name and folders
    often hold the patient's name or id; such a row is named by its case id (``private/`` maps it to the file)."""
    return str(row.get("source_format") or "image") != "image"


def _private_rows(manifest: pd.DataFrame) -> dict[int, dict[str, str]]:
    """Case id and source paths of the manifest's private-source rows, by manifest index."""
    if "source_format" not in manifest.columns:
        return {}
    positions = np.flatnonzero(manifest["source_format"].fillna("image").astype(str).to_numpy() != "image")
    keys = [k for k in ("case_id", "image_path", "mask_path") if k in manifest.columns]
    rows = manifest.iloc[positions][keys].to_dict("records")
    return {int(i): {k: str(row.get(k) or "") for k in keys} for i, row in zip(positions, rows, strict=True)}


@contextlib.contextmanager
def _case_named_warnings(row: dict[str, str] | None) -> Iterator[None]:
    """Re-issue the block's :class:`DataWarning` s as ``case <id>: <message without the row's paths>``."""
    if row is None:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, DataWarning):
            said = f"case {row.get('case_id', '')}: {_shareable(str(w.message), row)}"
            warnings.warn(said, DataWarning, stacklevel=1)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def collate_skipping(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate the readable items as usual; the skip markers go under ``"skipped"`` as ``(index, message)``."""
    good = [item for item in items if _SKIP_KEY not in item]
    batch: dict[str, Any] = default_collate(good) if good else {}
    batch["skipped"] = [item[_SKIP_KEY] for item in items if _SKIP_KEY in item]
    return batch


def _shareable(message: str, row: Any) -> str:
    """``message`` without the row's source paths (the shareable reason)."""
    for key in ("image_path", "mask_path"):
        value = str(row.get(key) or "")
        if value:
            message = message.replace(value, "").replace(Path(value).name, "")
    return " ".join(message.split())


class SkipLog:
    """The skipped images of one writer tag: loaded on start (minus the ones this run retries), saved on every
    new skip, announced on stderr with the file's path."""

    def __init__(self, folder: Path, tag: str, manifest: pd.DataFrame, retried: Sequence[int]) -> None:
        self.path = folder / f"skipped-{tag}.json"
        private = folder.parent / PRIVATE / f"{folder.name}.manifest.csv"  # predictions.save_manifests' file
        self.hint = f"{private} maps the case id to its file (private: never share it)"
        self.manifest = manifest
        retry = set(int(i) for i in retried)
        self.entries = [e for e in _load(self.path) if int(e["index"]) not in retry]
        if self.path.exists():
            self._save()

    def record(self, batch: dict[str, Any]) -> bool:
        """Take the batch's skip markers into the log; ``True`` when the batch has no readable image left."""
        skipped = batch.pop("skipped", [])
        for index, message in skipped:
            row = self.manifest.iloc[int(index)]
            case = str(row.get("case_id", ""))
            reason = _shareable(message, row)
            said = f"{reason}; {self.hint}" if private_source(row) else printable(message)  # no DICOM path
            print(f"warning: skipped image {index} (case {case}): {said}", file=sys.stderr, flush=True)
            self.entries.append({"index": int(index), "case_id": case, "reason": reason})
        if skipped:
            self._save()
        return "index" not in batch

    def _save(self) -> None:
        write_json_atomic(self.path, {"skipped": sorted(self.entries, key=lambda e: e["index"])})


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["skipped"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # a damaged list only loses the record; the images are retried anyway


def skipped_entries(folder: str | Path, scored: np.ndarray) -> list[dict[str, Any]]:
    """Every writer's skipped images in a predictions folder, minus any a later run scored, by index."""
    done = set(np.asarray(scored).tolist())
    entries = [e for path in sorted(Path(folder).glob(SKIPPED_GLOB)) for e in _load(path)]
    unique = {int(e["index"]): e for e in entries if int(e["index"]) not in done}
    return [unique[i] for i in sorted(unique)]


class PartialScoreError(MedadError):
    """Some images could not be read; the others were scored and written."""


def partial_error(scored: int, total: int, skipped: Sequence[dict[str, Any]], folder: Path) -> PartialScoreError:
    """The ``N of M scored; K skipped: see ...`` error ending a ``medad score`` that skipped images."""
    files = ", ".join(str(p) for p in sorted(folder.glob(SKIPPED_GLOB)))
    return PartialScoreError(
        f"{scored} of {total} scored; {len(skipped)} skipped: see {files} (each is named above, a DICOM / NIfTI "
        "source by its case id); fix or "
        "remove them and rerun the same command - what was scored is reused"
    )
