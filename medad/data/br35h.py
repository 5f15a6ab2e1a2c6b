"""Br35H (Kaggle "Br35H :: Brain Tumor Detection 2020", ahmedhamada0): ``yes/``, ``no/`` and ``pred/``.

``yes/y0.jpg`` ... (1500 tumour slices) and ``no/no0.jpg`` ... (1500 without) are labelled by their folder;
``pred/`` holds images the publisher left **unlabelled** (for predictions). AnomalyCLIP's
``generate_dataset_json/br35.py`` labels every folder other than ``no`` abnormal, so a download with ``pred/``
gets its unlabelled images scored as tumours there. Here ``pred/`` is never part of the labelled split: split
``test`` (the default, and what ``load_all_splits`` reads) is ``yes/`` + ``no/``; split ``pred`` reads ``pred/``
with label ``<NA>`` (unknown), for scoring only. Image labels only, no masks: pixel metrics are not applicable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, list_images, require_dir
from medad.data.synthetic import sampler, save_image
from medad.data.yes_no import add_yes_no, has_yes_no, stems
from medad.errors import DataError

CLASS_NAME = "brain"
"""The class word of every row (AnomalyCLIP's ``br35.py`` uses ``brain``)."""
UNLABELLED = "pred"
_YES_STEM = re.compile(r"^y\d+$")


def looks_like_br35h(root: Path) -> bool:
    """``yes/`` + ``no/`` with Br35H's ``pred/`` beside them, or ``yes/`` named ``y<n>`` (lower case)."""
    if not has_yes_no(root):
        return False
    names = stems(root / "yes")
    return (root / UNLABELLED).is_dir() or (bool(names) and all(_YES_STEM.match(name) for name in names))


def make_br35h(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """Br35H manifest: split ``test`` is ``yes/`` (1) + ``no/`` (0); split ``pred`` is ``pred/`` (label unknown).

    Args:
        root: The folder holding ``yes/``, ``no/`` (and ``pred/``).
        split: ``test`` (the labelled images) or ``pred`` (the unlabelled ones).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``kaggle``).
    """
    root = require_dir(Path(root).expanduser(), "Br35H root")
    if split not in ("test", UNLABELLED):
        raise DataError(f"Br35H has split 'test' (yes/ + no/) and '{UNLABELLED}' (unlabelled pred/), not '{split}'")
    builder = ManifestBuilder("br35h", root, split, "kaggle")
    if split == UNLABELLED:
        folder = root / UNLABELLED
        if not folder.is_dir():
            raise DataError(f"Br35H root {root} has no {UNLABELLED}/ folder; split '{UNLABELLED}' reads it")
        for image in list_images(folder, builder.problems):
            builder.add(image, class_name=CLASS_NAME, label=None, defect_type="")
        return builder.build(strict)
    if not has_yes_no(root):
        raise DataError(f"Br35H root {root} needs yes/ and no/; point to the folder holding them")
    add_yes_no(builder, root, CLASS_NAME)
    return builder.build(strict)


def _write_br35h(out: Path, request: SyntheticRequest) -> None:
    """``yes/y<n>.jpg``, ``no/no<n>.jpg`` and unlabelled ``pred/pred<n>.jpg`` (tumour and normal mixed)."""
    samples = sampler(request, "medical")
    for i in range(request.n_abnormal):
        save_image(samples.sample(True)[0], out / "yes" / f"y{i}.jpg")
    for i in range(request.n_normal):
        save_image(samples.sample(False)[0], out / "no" / f"no{i}.jpg")
    for i in range(max(1, request.n_abnormal // 2)):
        save_image(samples.sample(bool(i % 2))[0], out / UNLABELLED / f"pred{i}.jpg")


register_dataset(
    DatasetDescription(
        name="br35h",
        title="Br35H (Kaggle)",
        class_name=CLASS_NAME,
        make=make_br35h,
        detectors=(Detector(56, "Br35H yes/ + no/ (+ unlabelled pred/)", looks_like_br35h),),
        layouts={"br35h": _write_br35h},
    )
)
