"""CVC-ClinicDB: the original TIFF release (``Original/`` + ``Ground Truth/``) and the PNG copy
(``images/`` + ``masks/``). All 612 frames are polyps (label 1, class ``polyp``); the frame -> sequence map is
not in the file names, so ``group_id`` defaults to the frame.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, add_paired_folders, has_images_folder, require_dir
from medad.data.synthetic import sampler, write_pairs
from medad.errors import DataError

CLASS_NAME = "polyp"
"""The ``class_name`` of every row (used in place of folder names)."""

_LAYOUTS: tuple[tuple[str, str, str], ...] = (
    ("original-tiff", "Original", "Ground Truth"),
    ("png", "images", "masks"),
)


def find_clinicdb(root: Path) -> tuple[str, Path, Path] | None:
    """(variant, image folder, mask folder) of a CVC-ClinicDB root (or one folder level below), or ``None``."""
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    for base in candidates:
        for variant, images, masks in _LAYOUTS:
            if (base / images).is_dir():
                if variant == "png" and any((base / images).glob("*.tif")):
                    variant = "tiff"
                return variant, base / images, base / masks
    return None


def make_clinicdb(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """CVC-ClinicDB manifest.

    Args:
        root: Folder holding ``Original/`` + ``Ground Truth/`` (TIFF) or ``images/`` + ``masks/`` (PNG).
        split: Split name written in the manifest (the set has no official split).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``original-tiff`` or ``png``).
    """
    root = require_dir(Path(root).expanduser(), "CVC-ClinicDB root")
    found = find_clinicdb(root)
    if found is None:
        raise DataError(
            f"CVC-ClinicDB root {root} has neither 'Original/' + 'Ground Truth/' nor 'images/' + 'masks/'; "
            "point to the folder that holds them"
        )
    variant, image_dir, mask_dir = found
    builder = ManifestBuilder("clinicdb", root, split, variant)
    add_paired_folders(builder, image_dir, mask_dir, class_name=CLASS_NAME)
    return builder.build(strict)


def _write_tiff(root: Path, request: SyntheticRequest) -> None:
    """The original release: ``Original/N.tif`` + ``Ground Truth/N.tif``."""
    samples = sampler(request, "medical")
    write_pairs(
        root,
        samples,
        request.n_abnormal,
        "Original",
        "Ground Truth",
        lambda i: f"{i + 1}.tif",
        lambda i: f"{i + 1}.tif",
    )


def _write_png(root: Path, request: SyntheticRequest) -> None:
    """The PNG copy: ``images/N.png`` + ``masks/N.png``."""
    samples = sampler(request, "medical")
    write_pairs(
        root, samples, request.n_abnormal, "images", "masks", lambda i: f"{i + 1}.png", lambda i: f"{i + 1}.png"
    )


register_dataset(
    DatasetDescription(
        name="clinicdb",
        class_name=CLASS_NAME,
        make=make_clinicdb,
        detectors=(
            Detector(40, "CVC-ClinicDB Original/ + Ground Truth/", lambda r: r.is_dir() and (r / "Original").is_dir()),
            Detector(
                60,
                "images/ + masks/ in a folder named *clinic* (ClinicDB PNG)",
                lambda r: has_images_folder(r, "clinic"),
            ),
        ),
        in_release=True,
        reference_word="01",
        layouts={"clinicdb-tiff": _write_tiff, "clinicdb-png": _write_png},
    )
)
