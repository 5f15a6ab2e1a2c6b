"""BrainMRI (Kaggle): "Brain MRI Images for Brain Tumor Detection" (navoneel), 155 tumour and 98 normal slices.

The download holds the images twice, byte for byte: ``brain_tumor_dataset/{yes,no}/`` and ``{yes,no}/`` beside
it. Reading the download folder recursively would count every image twice; this reader reads one copy,
``brain_tumor_dataset/`` when it is there (the one AnomalyCLIP's ``generate_dataset_json/brainmri.py`` reads),
else the ``yes/`` + ``no/`` of the folder given. The files mix extensions (``Y1.jpg``, ``1 no.jpeg``, upper-case
``.JPG``), have spaces in their names, and come in several sizes and channel counts (greyscale, RGB); every image
is read as RGB. Image labels only, no masks: pixel metrics are not applicable. Not the BMAD Brain MRI set
(BraTS slices with masks, kind ``bmad_brainmri``): papers mix the two names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, require_dir
from medad.data.synthetic import sampler, save_image
from medad.data.yes_no import add_yes_no, has_yes_no, stems
from medad.errors import DataError

CLASS_NAME = "brain"
"""The class word of every row (AnomalyCLIP's ``brainmri.py`` uses ``brain``)."""
COPY = "brain_tumor_dataset"
"""The sub-folder holding the copy that is read when the download holds two."""
_YES_STEM = re.compile(r"^Y\d+$")


def find_brainmri(root: Path) -> Path | None:
    """The folder whose ``yes/`` + ``no/`` are read: ``root/brain_tumor_dataset`` if it has them, else ``root``."""
    if has_yes_no(root / COPY):
        return root / COPY
    return root if has_yes_no(root) else None


def looks_like_brainmri(root: Path) -> bool:
    """The Kaggle download: a ``brain_tumor_dataset/`` with ``yes/`` + ``no/``, or ``yes/`` named ``Y<n>``."""
    if has_yes_no(root / COPY):
        return True
    names = stems(root / "yes") if has_yes_no(root) else []
    return bool(names) and all(_YES_STEM.match(name) for name in names)


def make_brainmri_kaggle(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """BrainMRI (Kaggle) manifest: ``yes/`` label 1, ``no/`` label 0, no masks, one copy of the images.

    Args:
        root: The download folder (holding ``brain_tumor_dataset/``) or a folder holding ``yes/`` and ``no/``.
        split: Split name written in the manifest (the set has no official split).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``kaggle``; ``defect_type`` ``tumor`` or ``good``).
    """
    root = require_dir(Path(root).expanduser(), "BrainMRI (Kaggle) root")
    base = find_brainmri(root)
    if base is None:
        raise DataError(
            f"BrainMRI (Kaggle) root {root} holds neither {COPY}/ nor yes/ + no/; point to the Kaggle download "
            "'Brain MRI Images for Brain Tumor Detection'"
        )
    builder = ManifestBuilder("brainmri_kaggle", base, split, "kaggle")
    add_yes_no(builder, base, CLASS_NAME)
    return builder.build(strict)


_YES_NAMES = ("Y{n}.jpg", "Y{n}.JPG", "Y{n}.png", "Y{n}.jpg")
_NO_NAMES = ("{n} no.jpeg", "no {n}.jpg", "N{n}.JPG", "No{n}.jpg")


def _stored(image: np.ndarray, index: int) -> np.ndarray:
    """Mixed channel counts and sizes, as in the download: greyscale and RGB, cropped differently."""
    if index % 2:
        image = image.mean(axis=2).astype(np.uint8)
    return image[: image.shape[0] - 4 * (index % 3), : image.shape[1] - 2 * (index % 2)]


def _write_brainmri(out: Path, request: SyntheticRequest) -> None:
    """``brain_tumor_dataset/{yes,no}`` and the same files again in ``{yes,no}`` beside it (the download's copy)."""
    samples = sampler(request, "medical")
    for folder, count, names, abnormal in (
        ("yes", request.n_abnormal, _YES_NAMES, True),
        ("no", request.n_normal, _NO_NAMES, False),
    ):
        for i in range(count):
            image = _stored(samples.sample(abnormal)[0], i)
            name = names[i % len(names)].format(n=i + 1)
            first = save_image(image, out / COPY / folder / name)
            (out / folder).mkdir(parents=True, exist_ok=True)
            (out / folder / name).write_bytes(first.read_bytes())


register_dataset(
    DatasetDescription(
        name="brainmri_kaggle",
        title="BrainMRI (Kaggle)",
        class_name=CLASS_NAME,
        make=make_brainmri_kaggle,
        detectors=(Detector(57, "BrainMRI (Kaggle) brain_tumor_dataset/{yes,no} or yes/Y<n>", looks_like_brainmri),),
        layouts={"brainmri-kaggle": _write_brainmri},
    )
)
