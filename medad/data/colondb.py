"""CVC-ColonDB: PraNet's ``images/`` + ``masks/`` PNG copy (380 frames, what the ZSAD papers use) and the
original release (``<N>.bmp`` frames with ``p<N>.bmp`` polyp masks; other masks such as contours are ignored).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import (
    ManifestBuilder,
    add_paired_folders,
    has_images_folder,
    is_ignored,
    pair_by_stem,
    pairing_problems,
    require_dir,
)
from medad.data.synthetic import sampler, write_pairs
from medad.errors import DataError

CLASS_NAME = "polyp"
"""The ``class_name`` of every row (used in place of folder names)."""

_FRAME = re.compile(r"^(\d+)\.bmp$", re.IGNORECASE)
_POLYP_MASK = re.compile(r"^p(\d+)\.bmp$", re.IGNORECASE)


def _original_files(root: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in root.rglob("*.bmp") if p.is_file() and not is_ignored(p)]
    return sorted(p for p in files if _FRAME.match(p.name)), sorted(p for p in files if _POLYP_MASK.match(p.name))


def _original_key(path: Path, is_mask: bool) -> str:
    match = (_POLYP_MASK if is_mask else _FRAME).match(path.name)
    return str(int(match.group(1))) if match else path.name.lower()


def detect_colondb(root: Path) -> str | None:
    """``pranet`` or ``original-bmp`` when ``root`` holds that CVC-ColonDB layout, else ``None``."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "pranet"
    frames, masks = _original_files(root) if root.is_dir() else ([], [])
    return "original-bmp" if frames and masks else None


def make_colondb(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """CVC-ColonDB manifest (all frames are polyps: label 1, class ``polyp``).

    Args:
        root: PraNet ``TestDataset/CVC-ColonDB`` (``images/`` + ``masks/``) or the original bmp folder.
        split: Split name written in the manifest.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``pranet`` or ``original-bmp``).
    """
    root = require_dir(Path(root).expanduser(), "CVC-ColonDB root")
    variant = detect_colondb(root)
    if variant is None:
        raise DataError(
            f"CVC-ColonDB root {root} has neither 'images/' + 'masks/' (PraNet) nor '<N>.bmp' frames with "
            "'p<N>.bmp' masks (original); point to the folder that holds them"
        )
    builder = ManifestBuilder("colondb", root, split, variant)
    word = CLASS_NAME
    if variant == "pranet":
        add_paired_folders(builder, root / "images", root / "masks", class_name=word)
        return builder.build(strict)
    frames, masks = _original_files(root)
    pairing = pair_by_stem(frames, masks, key=_original_key)
    builder.problems.extend(pairing_problems(pairing, root))
    for frame in frames:
        if frame in pairing.pairs:
            builder.add(frame, class_name=word, label=1, mask_path=pairing.pairs[frame])
    return builder.build(strict)


def _write_pranet(root: Path, request: SyntheticRequest) -> None:
    """PraNet's copy: ``images/N.png`` + ``masks/N.png``."""
    samples = sampler(request, "medical")
    write_pairs(
        root, samples, request.n_abnormal, "images", "masks", lambda i: f"{i + 1}.png", lambda i: f"{i + 1}.png"
    )


def _write_bmp(root: Path, request: SyntheticRequest) -> None:
    """The original release: ``N.bmp`` frames with ``pN.bmp`` masks."""
    samples = sampler(request, "medical")
    write_pairs(root, samples, request.n_abnormal, ".", ".", lambda i: f"{i + 1}.bmp", lambda i: f"p{i + 1}.bmp")


register_dataset(
    DatasetDescription(
        name="colondb",
        class_name=CLASS_NAME,
        make=make_colondb,
        detectors=(
            Detector(
                61, "images/ + masks/ in a folder named *colon* (ColonDB PNG)", lambda r: has_images_folder(r, "colon")
            ),
            Detector(
                90,
                "CVC-ColonDB original <N>.bmp + p<N>.bmp",
                lambda r: r.is_dir() and detect_colondb(r) == "original-bmp",
            ),
        ),
        in_release=True,
        reference_word="01",
        layouts={"colondb-pranet": _write_pranet, "colondb-bmp": _write_bmp},
    )
)
