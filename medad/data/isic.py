"""ISIC skin-lesion segmentation (2016 Part 1, 2017 Part 1, 2018 Task 1) in their released folder names.

2016 masks end in ``_Segmentation.png`` (capital S), 2017/2018 in ``_segmentation.png``; images are ``.jpg``
(the 2017 folders also hold ``*_superpixels.png``, which are ignored). Images and masks are paired by their
``ISIC_<7 digits>`` id, case-insensitively.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medad.data.manifest import CLASS_WORDS, ManifestBuilder, list_images, pair_by_stem, pairing_problems, require_dir
from medad.errors import DataError

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


def _isic_key(path: Path, _is_mask: bool) -> str:
    match = _ISIC_ID.search(path.name)
    return match.group(0).lower() if match else path.stem.lower()


def make_isic(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """ISIC manifest (all images are lesions: label 1, class ``skin_lesion``).

    Args:
        root: Folder holding the released ISIC folders, e.g. ``ISBI2016_ISIC_Part1_Test_Data`` and
            ``ISBI2016_ISIC_Part1_Test_GroundTruth``.
        split: ``test``, ``train`` or ``val``.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``isic2016``, ``isic2017`` or ``isic2018``).
    """
    root = require_dir(Path(root).expanduser(), "ISIC root")
    found = find_isic_folders(root, split)
    if found is None:
        names = [f.format(w=_SPLIT_WORDS.get(split, (split,))[0]) for f, _ in _YEAR_FOLDERS.values()]
        raise DataError(f"ISIC root {root} has no image folder for split '{split}' (looked for {names})")
    variant, image_dir, mask_dir = found
    builder = ManifestBuilder("isic", root, split, variant)
    images = [p for p in list_images(image_dir, extensions={".jpg", ".jpeg"}) if _ISIC_ID.search(p.name)]
    if not mask_dir.is_dir():
        builder.problem(mask_dir, "is missing; ISIC images need their ground-truth folder next to them")
        return builder.build(strict)
    masks = [p for p in list_images(mask_dir, extensions={".png"}) if "segmentation" in p.name.lower()]
    pairing = pair_by_stem(images, masks, key=_isic_key)
    builder.problems.extend(pairing_problems(pairing, mask_dir))
    for image in images:
        if image in pairing.pairs:
            builder.add(image, class_name=CLASS_WORDS["isic"], label=1, mask_path=pairing.pairs[image])
    return builder.build(strict)
