"""ISIC skin-lesion segmentation (2016 Part 1, 2017 Part 1, 2018 Task 1) in their released folder names.

2016 masks end in ``_Segmentation.png`` (capital S), 2017/2018 in ``_segmentation.png``; images are ``.jpg``
(the 2017 folders also hold ``*_superpixels.png``, which are ignored). Images and masks are paired by their
``ISIC_<7 digits>`` id, case-insensitively.

AnomalyCLIP's copy of the 2016 test set is read too: ``skin/test/<type>/ISIC_XXXXXXX.jpg`` with the released
``skin/ISBI2016_ISIC_Part1_Test_GroundTruth/`` next to it (variant ``anomalyclip-skin``); a ``good`` type folder
would hold normal images.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import (
    ManifestBuilder,
    is_ignored,
    list_images,
    pair_by_stem,
    pairing_problems,
    require_dir,
)
from medad.data.synthetic import mask_u8, sampler, save_image, write_pairs
from medad.errors import DataError

CLASS_NAME = "skin_lesion"
"""The ``class_name`` of every row (used in place of folder names)."""

_SPLIT_WORDS: dict[str, tuple[str, ...]] = {
    "test": ("Test_v2", "Test"),
    "train": ("Training",),
    "val": ("Validation",),
}
_ISIC_ID = re.compile(r"isic_\d{7}", re.IGNORECASE)
_YEAR_FOLDERS: dict[str, tuple[str, str]] = {
    "isic2016": ("ISBI2016_ISIC_Part1_{w}_Data", "ISBI2016_ISIC_Part1_{w}_GroundTruth"),
    "isic2017": ("ISIC-2017_{w}_Data", "ISIC-2017_{w}_Part1_GroundTruth"),
    "isic2018": ("ISIC2018_Task1-2_{w}_Input", "ISIC2018_Task1_{w}_GroundTruth"),
}


def find_isic_folders(root: Path, split: str) -> tuple[str, Path, Path] | None:
    """The (variant, image folder, mask folder) of an ISIC root for ``split``, or ``None``."""
    words = _SPLIT_WORDS.get(split, (split,))
    for variant, (image_fmt, mask_fmt) in _YEAR_FOLDERS.items():
        for word in words:
            images, masks = root / image_fmt.format(w=word), root / mask_fmt.format(w=word)
            if images.is_dir():
                return variant, images, masks
    return None


def find_anomalyclip_skin(root: Path, split: str) -> tuple[Path, Path] | None:
    """(``skin/<split>`` folder, ground-truth folder) of AnomalyCLIP's ISIC copy, or ``None``.

    ``root`` may be the ``skin`` folder or the folder that holds it.
    """
    words = _SPLIT_WORDS.get(split, (split,))
    for skin in (root, root / "skin"):
        split_dir = skin / split
        if not split_dir.is_dir():
            continue
        for word in words:
            ground_truth = skin / _YEAR_FOLDERS["isic2016"][1].format(w=word)
            if ground_truth.is_dir():
                return split_dir, ground_truth
    return None


def _isic_key(path: Path, _is_mask: bool) -> str:
    match = _ISIC_ID.search(path.name)
    return match.group(0).lower() if match else path.stem.lower()


def _isic_images(folder: Path) -> list[Path]:
    return [p for p in list_images(folder, extensions={".jpg", ".jpeg"}) if _ISIC_ID.search(p.name)]


def _isic_masks(folder: Path) -> list[Path]:
    return [p for p in list_images(folder, extensions={".png"}) if "segmentation" in p.name.lower()]


def _add_released(builder: ManifestBuilder, image_dir: Path, mask_dir: Path) -> None:
    images = _isic_images(image_dir)
    if not mask_dir.is_dir():
        builder.problem(mask_dir, "is missing; ISIC images need their ground-truth folder next to them")
        return
    pairing = pair_by_stem(images, _isic_masks(mask_dir), key=_isic_key)
    builder.problems.extend(pairing_problems(pairing, mask_dir))
    for image in images:
        if image in pairing.pairs:
            builder.add(image, class_name=CLASS_NAME, label=1, mask_path=pairing.pairs[image])


def _add_anomalyclip(builder: ManifestBuilder, split_dir: Path, mask_dir: Path) -> None:
    normals: list[tuple[Path, str]] = []
    lesions: list[tuple[Path, str]] = []
    for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not is_ignored(p)):
        found = normals if type_dir.name.lower() == "good" else lesions
        found.extend((image, type_dir.name) for image in _isic_images(type_dir))
    pairing = pair_by_stem([image for image, _ in lesions], _isic_masks(mask_dir), key=_isic_key)
    builder.problems.extend(pairing_problems(pairing, mask_dir))
    for image, defect in normals:
        builder.add(image, class_name=CLASS_NAME, label=0, defect_type=defect)
    for image, defect in lesions:
        if image in pairing.pairs:
            builder.add(image, class_name=CLASS_NAME, label=1, mask_path=pairing.pairs[image], defect_type=defect)


def make_isic(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """ISIC manifest (lesions: label 1, class ``skin_lesion``).

    Args:
        root: Folder holding the released ISIC folders, e.g. ``ISBI2016_ISIC_Part1_Test_Data`` and
            ``ISBI2016_ISIC_Part1_Test_GroundTruth``; or AnomalyCLIP's ``skin`` folder (or its parent) holding
            ``test/<type>/`` and ``ISBI2016_ISIC_Part1_Test_GroundTruth``.
        split: ``test``, ``train`` or ``val``.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``isic2016``, ``isic2017``, ``isic2018`` or ``anomalyclip-skin``).
    """
    root = require_dir(Path(root).expanduser(), "ISIC root")
    found = find_isic_folders(root, split)
    if found is not None:
        variant, image_dir, mask_dir = found
        builder = ManifestBuilder("isic", root, split, variant)
        _add_released(builder, image_dir, mask_dir)
        return builder.build(strict)
    skin = find_anomalyclip_skin(root, split)
    if skin is None:
        words = _SPLIT_WORDS.get(split, (split,))
        names = [f.format(w=w) for f, _ in _YEAR_FOLDERS.values() for w in words]
        ground_truth = " or ".join(_YEAR_FOLDERS["isic2016"][1].format(w=w) for w in words)
        raise DataError(
            f"ISIC root {root} has no image folder for split '{split}' (looked for {names}, and for AnomalyCLIP's "
            f"skin/{split}/<type>/ with skin/{ground_truth})"
        )
    split_dir, mask_dir = skin
    builder = ManifestBuilder("isic", split_dir.parent, split, "anomalyclip-skin")  # same ids from skin/ or above
    _add_anomalyclip(builder, split_dir, mask_dir)
    return builder.build(strict)


def _has_isic_layout(root: Path) -> bool:
    return root.is_dir() and any(
        find_isic_folders(root, s) or find_anomalyclip_skin(root, s) for s in ("test", "train", "val")
    )


_SYNTHETIC_FOLDERS: dict[str, tuple[str, str, str]] = {
    "isic2016": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "Segmentation"),
    "isic2017": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "segmentation"),
    "isic2018": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "segmentation"),
}
"""(image folder, mask folder, mask word) of each synthetic ISIC year's test set."""


def _write_year(root: Path, request: SyntheticRequest, year: str) -> None:
    """One challenge year's test folders (2017 with its ``*_superpixels.png`` beside the images)."""
    image_dir, mask_dir, word = _SYNTHETIC_FOLDERS[year]
    samples = sampler(request, "medical")
    n = request.n_abnormal
    write_pairs(
        root, samples, n, image_dir, mask_dir, lambda i: f"ISIC_{i:07d}.jpg", lambda i: f"ISIC_{i:07d}_{word}.png"
    )
    if year == "isic2017":
        blank = np.zeros((request.size, request.size, 3), np.uint8)
        for i in range(n):
            save_image(blank, root / image_dir / f"ISIC_{i:07d}_superpixels.png")


def _write_anomalyclip(out: Path, request: SyntheticRequest) -> None:
    """AnomalyCLIP's ISIC copy: ``skin/test/anomaly/*.jpg``, the ISBI 2016 ground truth and a ``meta.json``."""
    samples = sampler(request, "medical")
    items = []
    for i in range(request.n_abnormal):
        image, mask = samples.sample(True)
        rel = f"skin/test/anomaly/ISIC_{i:07d}.jpg"
        mask_rel = f"skin/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_{i:07d}_Segmentation.png"
        save_image(image, out / rel)
        save_image(mask_u8(mask), out / mask_rel)
        item = {"img_path": rel, "mask_path": mask_rel, "cls_name": "skin", "specie_name": "anomaly", "anomaly": 1}
        items.append(item)
    meta = {"train": {}, "test": {"skin": items}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


register_dataset(
    DatasetDescription(
        name="isic",
        class_name=CLASS_NAME,
        make=make_isic,
        splits=("train", "val", "test"),
        detectors=(
            Detector(
                20, "ISIC 2016/2017/2018 folders or AnomalyCLIP skin/test + ISBI2016 ground truth", _has_isic_layout
            ),
        ),
        in_release=True,
        reference_word="01",
        layouts={
            **{year: functools.partial(_write_year, year=year) for year in _SYNTHETIC_FOLDERS},
            "isic-anomalyclip": _write_anomalyclip,
        },
    )
)
