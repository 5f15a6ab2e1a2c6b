"""``medad datasets check``: counts, the detected variant and every problem of a dataset, files opened."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from medad.data.dicom import relative_name
from medad.data.hashing import add_sha256
from medad.data.manifest import Problem
from medad.data.readers import image_shape, read_image, read_mask
from medad.data.registry import detect_kind, load_manifest
from medad.errors import DataError, DataWarning

T = TypeVar("T")


def with_warnings_as_problems(path: str, action: Callable[[], T]) -> tuple[T, list[Problem]]:
    """Run ``action``; every :class:`DataWarning` it raises (a repair such as NaN voxels or a file left out)
    becomes a ``warning:`` problem of ``path``, so a check lists it."""
    from medad.data.labels import LabelsInferred

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = action()
    for note in (w for w in caught if issubclass(w.category, LabelsInferred)):  # said, not a problem
        warnings.warn(note.message, note.category, stacklevel=2)
    problems = [w for w in caught if issubclass(w.category, DataWarning) and not issubclass(w.category, LabelsInferred)]
    return result, [Problem(path, f"warning: {w.message}") for w in problems]


def _read(row: dict[str, Any], decode: bool) -> None:
    """Read a row's image (fully, or its header only) and its mask, raising on a bad file."""
    if decode:
        read_image(row)
    else:
        image_shape(row)
    if row["mask_path"]:
        read_mask(row)


def _where(row: dict[str, Any], root: Path | None) -> str:
    """The file a problem names: the mask or image path; a DICOM source by its name relative to ``root`` (the
    folder the user asked about), never by its full path, which can hold a patient's name."""
    path = row["mask_path"] or row["image_path"]
    if row["source_format"] != "dicom":
        return str(path)
    base = root if root is not None and root.is_dir() else Path(path).parent
    return relative_name(Path(path), base.expanduser().resolve())


def validate_files(manifest: pd.DataFrame, decode: bool = True, root: str | Path | None = None) -> list[Problem]:
    """Open every image (and mask) of a manifest and report each unreadable file or size mismatch.

    Args:
        manifest: A manifest.
        decode: Decode the full pixel data (catches truncated files); otherwise read headers only.
        root: The folder checked: DICOM problems name their file relative to it (default: its own folder).

    Returns:
        One problem per bad file (each image is checked once, even when it has many frames/slices).
    """
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for row in manifest.to_dict("records"):
        key = (row["image_path"], row["mask_path"])
        if row["source_format"] != "image" and key in seen:
            continue
        seen.add(key)
        where = _where(row, None if root is None else Path(root))
        try:
            problems += with_warnings_as_problems(where, functools.partial(_read, row, decode))[1]
        except DataError as exc:
            problems.append(Problem(where, str(exc)))
    return problems


def _class_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {
        str(name): {
            "total": len(group),
            "normal": int((group["label"] == 0).sum()),
            "abnormal": int((group["label"] == 1).sum()),
        }
        for name, group in manifest.groupby("class_name", sort=True)
    }


def check_dataset(
    root: str | Path, /, kind: str = "auto", split: str = "test", sha256: bool = False, **options: Any
) -> dict[str, Any]:
    """Check a dataset: counts, detected variant and every problem (structure and unreadable files).

    Args:
        root: Dataset root.
        kind: Dataset kind or ``auto``.
        split: Split to check.
        sha256: Also hash every image and mask file (the report's ``files``).
        **options: Passed to the ``make_<kind>`` function.

    Returns:
        ``{"kind", "variant", "root", "split", "total", "normal", "abnormal", "unknown", "classes":
        {class: {"total", "normal", "abnormal"}}, "problems": [{"path", "message"}]}``; with ``sha256`` also
        ``"files": [{"image_path", "sha256", "mask_path", "mask_sha256"}]``, one per distinct image/mask pair.

    Raises:
        DataError: The root is missing or not a known layout, or (``sha256``) a file cannot be read.
    """
    resolved = detect_kind(root) if kind == "auto" else kind
    manifest, left_out = with_warnings_as_problems(
        str(root), lambda: load_manifest(root, resolved, split=split, strict=False, **options)
    )
    problems = list(manifest.attrs.get("problems", [])) + left_out + validate_files(manifest, root=root)
    labels = manifest["label"]
    variants = sorted(set(manifest["variant"])) or [""]
    report: dict[str, Any] = {
        "kind": resolved,
        "variant": ",".join(variants),
        "root": str(Path(root).expanduser()),
        "split": split,
        "total": len(manifest),
        "normal": int((labels == 0).sum()),
        "abnormal": int((labels == 1).sum()),
        "unknown": int(labels.isna().sum()),
        "classes": _class_counts(manifest),
        "problems": [{"path": p.path, "message": p.message} for p in problems],
    }
    if sha256:
        columns = ["image_path", "sha256", "mask_path", "mask_sha256"]
        hashed = add_sha256(manifest).drop_duplicates(["image_path", "mask_path"])
        report["files"] = hashed[columns].to_dict("records")
    return report
