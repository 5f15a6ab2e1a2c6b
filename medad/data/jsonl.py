"""AA-CLIP's jsonl form: one JSON object per line, ``{"image_path", "label", "class_name", "mask_path"}``.

Paths are relative to a per-dataset root (AA-CLIP keeps it in ``dataset/constants.py``; here the ``root=``
option, by default the jsonl's folder); absolute paths pass through. ``label`` is 0/1 (``true``/``false``
accepted) and ``mask_path`` may be missing or ``""``. medad's writer adds ``split`` and ``defect_type`` (and
``sha256``/``mask_sha256`` when the manifest has them); the reader uses ``split`` and ``defect_type`` when present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.manifest import ManifestBuilder, is_ignored, is_image_file
from medad.errors import DataError

REQUIRED_KEYS: tuple[str, ...] = ("image_path", "label", "class_name")


def find_jsonl(path: Path) -> Path:
    """The jsonl file of ``path``: the file itself, or the only ``*.jsonl`` file directly in a folder."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"jsonl manifest {path} does not exist; give a .jsonl file or the folder that holds one")
    found = sorted(p for p in path.glob("*.jsonl") if p.is_file() and not is_ignored(p))
    if len(found) != 1:
        names = [p.name for p in found]
        what = f"holds several .jsonl files {names}" if found else "holds no .jsonl file"
        raise DataError(f"folder {path} {what}; give the path of the one .jsonl file to read")
    return found[0]


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    return None


def make_jsonl(
    path: str | Path, split: str | None = "test", root: str | Path | None = None, strict: bool = True
) -> pd.DataFrame:
    """Manifest from an AA-CLIP style jsonl file.

    Args:
        path: The ``.jsonl`` file, or a folder holding exactly one.
        split: Split of the rows. Lines with a ``split`` key are kept only when it matches; lines without one
            take this split. ``None`` keeps every line (lines without a ``split`` key become ``test``).
        root: Folder that relative ``image_path``/``mask_path`` values are relative to; defaults to the
            jsonl's folder.
        strict: Raise one DataError listing every problem (each broken line as ``file:line``).

    Returns:
        The manifest (dataset and variant ``jsonl``).
    """
    file = find_jsonl(Path(path).expanduser())
    base = Path(root).expanduser() if root is not None else file.parent
    if not base.is_dir():
        raise DataError(f"jsonl data root {base} is not a folder; pass the folder the paths in {file} start from")
    builder = ManifestBuilder("jsonl", base, split or "test", "jsonl")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{file} is not UTF-8 text; re-save the jsonl as UTF-8") from None
    for number, text in enumerate(lines, start=1):
        where = f"{file}:{number}"
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            builder.problem(where, f"is not valid JSON ({exc.msg} at column {exc.colno}); fix or remove the line")
            continue
        if not isinstance(item, dict):
            builder.problem(where, f"is a JSON {type(item).__name__}, not an object; write one object per line")
            continue
        missing = [key for key in REQUIRED_KEYS if key not in item]
        if missing:
            builder.problem(
                where, f"lacks key(s) {missing}; every line needs {list(REQUIRED_KEYS)} (mask_path optional)"
            )
            continue
        line_split = item.get("split")
        if split is not None and line_split not in (None, "", split):
            continue
        label = _label(item["label"])
        if label is None:
            builder.problem(where, f"has label {item['label']!r}; use 0 (normal) or 1 (anomalous)")
            continue
        if not isinstance(item["image_path"], str) or not item["image_path"]:
            builder.problem(where, "has an empty or non-string image_path; give the image's path")
            continue
        image = base / item["image_path"]
        mask_text = item.get("mask_path") or ""
        mask = base / str(mask_text) if mask_text else None
        if not image.is_file():
            builder.problem(image, f"(line {number} of {file.name}) does not exist; fix the path or the root")
            continue
        if not is_image_file(image):
            builder.problem(image, f"(line {number} of {file.name}) is not an image file; fix the path")
            continue
        if mask is not None and not mask.is_file():
            builder.problem(mask, f"(line {number} of {file.name}, mask) does not exist; fix the mask path")
            continue
        builder.add(
            image,
            class_name=str(item["class_name"]),
            label=label,
            mask_path=mask,
            defect_type=str(item.get("defect_type") or ("good" if label == 0 else "")),
            split=str(line_split or split or "test"),
        )
    return builder.build(strict)


def _is_jsonl_folder(root: Path) -> bool:
    if not root.is_dir():
        return False
    try:
        find_jsonl(root)
    except DataError:
        return False
    return True


register_dataset(
    DatasetDescription(
        name="jsonl",
        make=make_jsonl,
        detectors=(
            Detector(101, "a jsonl manifest file", lambda r: r.is_file() and r.suffix.lower() == ".jsonl"),
            Detector(110, "folder with one .jsonl file", _is_jsonl_folder),
        ),
        whole_file=True,
    )
)
