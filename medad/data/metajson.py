"""The AnomalyCLIP / AdaCLIP ``meta.json`` form: ``{"train"|"test": {cls: [item, ...]}}``.

An item holds ``img_path``, ``mask_path`` (``""`` for normal), ``cls_name``, ``specie_name`` (defect type)
and ``anomaly`` (0/1); paths are relative to the dataset root or absolute. The generators of that file pair
images and masks by sorted position, so every listed file is checked to exist here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.manifest import ManifestBuilder, is_image_file
from medad.errors import DataError


def read_meta_json(
    root: str | Path,
    *,
    dataset: str,
    split: str = "test",
    class_word: str | None = None,
    strict: bool = True,
) -> pd.DataFrame:
    """Manifest from ``<root>/meta.json`` (or from a ``.json`` file in that form).

    Args:
        root: Folder holding ``meta.json``, or the JSON file itself; relative paths start from its folder.
        dataset: Value of the ``dataset`` column.
        split: Top-level key of the JSON (``test`` or ``train``).
        class_word: Class word for every row; defaults to each item's ``cls_name``.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``meta-json``).
    """
    root = Path(root).expanduser()
    meta_path = root / "meta.json"
    if root.suffix.lower() == ".json" and not root.is_dir():
        meta_path, root = root, root.parent
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{meta_path} does not exist; give the folder that holds meta.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path} is not valid JSON ({exc}); regenerate it") from None
    if not isinstance(meta, dict) or split not in meta or not isinstance(meta[split], dict):
        keys = sorted(meta) if isinstance(meta, dict) else []
        raise DataError(f"{meta_path} has no '{split}' section (found {keys}); choose another split")
    builder = ManifestBuilder(dataset, root, split, "meta-json")
    for cls, items in sorted(meta[split].items()):
        for item in items:
            try:
                image = root / str(item["img_path"])
                mask_text = str(item.get("mask_path") or "")
                label = int(item["anomaly"])
            except (KeyError, TypeError, ValueError):
                builder.problem(meta_path, f"item {item!r:.120} lacks img_path/anomaly; regenerate meta.json")
                continue
            mask = root / mask_text if mask_text else None
            if not image.is_file():
                builder.problem(image, "is listed in meta.json but does not exist; restore it or fix meta.json")
                continue
            if not is_image_file(image):
                builder.problem(image, "is not an image file; fix meta.json")
                continue
            if mask is not None and not mask.is_file():
                builder.problem(mask, f"is listed in meta.json as the mask of {image} but does not exist")
                continue
            if label == 1 and mask is None and split == "test":
                builder.problem(image, "is anomalous in meta.json but has no mask_path; add the mask")
                continue
            builder.add(
                image,
                class_name=class_word or str(item.get("cls_name") or cls),
                label=label,
                mask_path=mask,
                defect_type=str(item.get("specie_name") or ("good" if label == 0 else "")),
            )
    return builder.build(strict)


def meta_json_classes(root: str | Path) -> set[str] | None:
    """The class names listed in ``<root>/meta.json`` (all splits), or ``None`` when it is missing or unreadable."""
    try:
        meta = json.loads((Path(root) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    return {str(cls) for section in meta.values() if isinstance(section, dict) for cls in section}


def make_meta_json(
    root: str | Path,
    split: str = "test",
    dataset: str = "meta_json",
    class_word: str | None = None,
    strict: bool = True,
) -> pd.DataFrame:
    """Manifest of any dataset given as an AnomalyCLIP / AdaCLIP ``meta.json`` (kind ``meta_json``).

    Those repos ship such files for sets medad has no native reader for (HeadCT, BrainMRI, DAGM, ...), and write
    them for the native ones too. VisA's ``meta.json`` is read by :func:`medad.data.visa.make_visa`.

    Args:
        root: Folder holding ``meta.json``, or the JSON file itself; relative paths start from its folder.
        split: Top-level key to read (``test`` or ``train``).
        dataset: Value of the ``dataset`` column (e.g. ``headct``).
        class_word: Class word for every row; defaults to each item's ``cls_name``.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``meta-json``).
    """
    return read_meta_json(root, dataset=dataset, split=split, class_word=class_word, strict=strict)


register_dataset(
    DatasetDescription(
        name="meta_json",
        make=make_meta_json,
        splits=("train", "test"),
        detectors=(
            Detector(81, "AnomalyCLIP meta.json (any set)", lambda r: r.is_dir() and meta_json_classes(r) is not None),
        ),
    )
)
