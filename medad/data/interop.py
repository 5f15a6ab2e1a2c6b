"""Write a manifest in the forms the ZSAD research repos read: AnomalyCLIP/AdaCLIP ``meta.json`` and AA-CLIP jsonl.

Both need a known 0/1 label per image file, so rows of unknown label and DICOM/NIfTI frames are refused with a
DataError. Paths are written relative to ``root`` when the file lies under it (those repos join their dataset
root and the path), absolute otherwise. Files are written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from medad.data.hashing import add_sha256
from medad.data.registry import load_all_splits, load_manifest
from medad.errors import ConfigError, DataError
from medad.utils.io import write_json_atomic, write_text_atomic

_NEEDED = ("image_path", "mask_path", "label", "class_name", "split", "defect_type")
_HASH_COLUMNS = ("sha256", "mask_sha256")


def _relative(path: str, root: Path | None) -> str:
    if not path or root is None:
        return path
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def _rows(manifest: pd.DataFrame, root: str | Path | None, form: str) -> Iterator[dict[str, Any]]:
    """Checked rows with portable ``image``/``mask`` paths, an int label and the optional hashes."""
    missing = [c for c in _NEEDED if c not in manifest.columns]
    if missing:
        raise DataError(f"the manifest lacks column(s) {missing}; build it with medad.data.load_manifest")
    if manifest.empty:
        raise DataError(f"the manifest has no rows, so there is nothing to write as {form}; check the dataset")
    unknown = manifest[manifest["label"].isna()]
    if len(unknown):
        examples = ", ".join(unknown["case_id"].astype(str).head(3)) if "case_id" in unknown else ""
        raise DataError(
            f"{len(unknown)} manifest row(s) have an unknown label (<NA>){f', e.g. {examples}' if examples else ''};"
            f" {form} needs every image as normal (0) or anomalous (1) - label them or drop them first"
        )
    if "source_format" in manifest.columns:
        frames = manifest[manifest["source_format"].astype(str).isin(["dicom", "nifti"])]
        if len(frames):
            raise DataError(
                f"{len(frames)} manifest row(s) are DICOM frames or NIfTI slices; {form} lists image files only - "
                "export those rows to PNG first"
            )
    base = Path(root).expanduser().resolve() if root is not None else None
    hashes = [c for c in _HASH_COLUMNS if c in manifest.columns]
    for row in manifest.to_dict("records"):
        yield {
            "image": _relative(str(row["image_path"]), base),
            "mask": _relative(str(row["mask_path"] or ""), base),
            "label": int(row["label"]),
            "class_name": str(row["class_name"]),
            "split": str(row["split"] or "test"),
            "defect_type": str(row["defect_type"] or ""),
            **{c: str(row[c] or "") for c in hashes},
        }


def write_meta_json(manifest: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Write ``manifest`` as an AnomalyCLIP/AdaCLIP ``meta.json``.

    The form is ``{"train": {cls: [item, ...]}, "test": {cls: [item, ...]}}`` (other splits get their own key);
    an item holds ``img_path``, ``mask_path`` (``""`` for none), ``cls_name``, ``specie_name`` (the defect type,
    ``good`` for normals without one) and ``anomaly`` (0/1), plus ``sha256``/``mask_sha256`` when the manifest
    has them (see :func:`medad.data.add_sha256`).

    Args:
        manifest: A manifest (every label known).
        path: The file to write (AnomalyCLIP reads ``<dataset root>/meta.json``).
        root: Write paths of files under this folder relative to it; others (and all, when ``None``) absolute.

    Returns:
        The path written.

    Raises:
        DataError: Rows with unknown label, DICOM/NIfTI rows, missing columns or an empty manifest.
    """
    meta: dict[str, dict[str, list[dict[str, Any]]]] = {"train": {}, "test": {}}
    for row in _rows(manifest, root, "meta.json"):
        item = {
            "img_path": row["image"],
            "mask_path": row["mask"],
            "cls_name": row["class_name"],
            "specie_name": row["defect_type"] or ("good" if row["label"] == 0 else ""),
            "anomaly": row["label"],
        }
        item.update({c: row[c] for c in _HASH_COLUMNS if c in row})
        meta.setdefault(row["split"], {}).setdefault(row["class_name"], []).append(item)
    write_json_atomic(path, meta)
    return Path(path)


def write_jsonl(manifest: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Write ``manifest`` as AA-CLIP jsonl: one ``{image_path, label, class_name, mask_path}`` object per line.

    Each line also carries ``split`` and ``defect_type`` (and ``sha256``/``mask_sha256`` when the manifest has
    them), which :func:`medad.data.jsonl.make_jsonl` reads back.

    Args:
        manifest: A manifest (every label known).
        path: The ``.jsonl`` file to write.
        root: Write paths of files under this folder relative to it; others (and all, when ``None``) absolute.

    Returns:
        The path written.

    Raises:
        DataError: Rows with unknown label, DICOM/NIfTI rows, missing columns or an empty manifest.
    """
    lines = []
    for row in _rows(manifest, root, "jsonl"):
        line = {
            "image_path": row["image"],
            "label": row["label"],
            "class_name": row["class_name"],
            "mask_path": row["mask"],
            "split": row["split"],
            "defect_type": row["defect_type"],
        }
        line.update({c: row[c] for c in _HASH_COLUMNS if c in row})
        lines.append(json.dumps(line, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)


FORMATS: dict[str, Callable[[pd.DataFrame, str | Path, str | Path | None], Path]] = {
    "meta-json": write_meta_json,
    "jsonl": write_jsonl,
}
"""Export formats by name: writer ``(manifest, path, root)``."""


def export_dataset(
    root: str | Path,
    out: str | Path,
    *,
    fmt: str = "meta-json",
    kind: str = "auto",
    split: str = "test",
    sha256: bool = False,
    paths_root: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Read a dataset in its layout and write it as ``meta.json`` or jsonl (what ``medad datasets export`` does).

    Args:
        root: Dataset root (or a CSV / jsonl file).
        out: File to write.
        fmt: ``meta-json`` or ``jsonl``.
        kind: Dataset kind or ``auto``.
        split: Split to export, or ``all`` for every split the layout holds.
        sha256: Add each file's sha256 (``sha256``, ``mask_sha256``) to the items.
        paths_root: Write paths relative to this folder where possible (``None``: absolute paths).
        progress: Progress bar on stderr while hashing.
        **options: Passed to the ``make_<kind>`` function.

    Returns:
        The manifest that was written.

    Raises:
        DataError: Bad dataset, option or rows (see :func:`write_meta_json`).
        ConfigError: Unknown format.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if split == "all":
        manifest = load_all_splits(root, kind, **options)
    else:
        manifest = load_manifest(root, kind, split=split, **options)
    if sha256:
        manifest = add_sha256(manifest, progress=progress)
    FORMATS[fmt](manifest, out, paths_root)
    return manifest
