"""TN3K thyroid-nodule ultrasound (haifangong/TRFE-Net): ``{test,trainval}-image/N.jpg`` with
``{test,trainval}-mask/N.jpg``. Masks are JPEG with the same file name as their image, so they are binarised
with ``>127`` (never ``==255``, never ``>0``: JPEG ringing would grow the nodule).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, add_paired_folders, require_dir
from medad.data.synthetic import sampler, write_pairs
from medad.errors import DataError

CLASS_NAME = "thyroid_nodule"
"""The ``class_name`` of every row (used in place of folder names)."""

_SPLIT_PREFIX: dict[str, str] = {"test": "test", "trainval": "trainval", "train": "trainval"}


def make_tn3k(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """TN3K manifest (all images are nodules: label 1, class ``thyroid_nodule``).

    Args:
        root: Folder holding ``test-image/`` and ``test-mask/`` (and/or ``trainval-*``).
        split: ``test`` or ``trainval`` (``train`` is read as ``trainval``).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``tn3k``).
    """
    root = require_dir(Path(root).expanduser(), "TN3K root")
    prefix = _SPLIT_PREFIX.get(split)
    if prefix is None:
        raise DataError(f"TN3K has splits 'test' and 'trainval', not '{split}'")
    image_dir = root / f"{prefix}-image"
    if not image_dir.is_dir():
        raise DataError(f"TN3K root {root} has no '{prefix}-image/' folder; point to the folder that holds it")
    builder = ManifestBuilder("tn3k", root, prefix, "tn3k")
    add_paired_folders(builder, image_dir, root / f"{prefix}-mask", class_name=CLASS_NAME)
    return builder.build(strict)


def _write_tn3k(root: Path, request: SyntheticRequest) -> None:
    """The test split: ``test-image/NNNN.jpg`` + ``test-mask/NNNN.jpg``."""
    samples = sampler(request, "medical")
    write_pairs(
        root, samples, request.n_abnormal, "test-image", "test-mask", lambda i: f"{i:04d}.jpg", lambda i: f"{i:04d}.jpg"
    )


def _has_tn3k_folders(root: Path) -> bool:
    return root.is_dir() and ((root / "test-image").is_dir() or (root / "trainval-image").is_dir())


register_dataset(
    DatasetDescription(
        name="tn3k",
        class_name=CLASS_NAME,
        make=make_tn3k,
        splits=("trainval", "test"),
        detectors=(Detector(30, "TN3K test-image/ + test-mask/", _has_tn3k_folders),),
        in_release=True,
        reference_word="Medical_Dataset",
        layouts={"tn3k": _write_tn3k},
    )
)
