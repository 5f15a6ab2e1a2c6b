"""The ``yes/`` + ``no/`` folders of the Kaggle brain-tumour sets (BrainMRI, Br35H), shared by their readers.

``yes/`` holds the images with a tumour (label 1), ``no/`` those without (label 0); image labels only, no
masks, so pixel metrics are not applicable on these sets.
"""

from __future__ import annotations

from pathlib import Path

from medad.data.manifest import ManifestBuilder, list_images

FOLDERS: tuple[tuple[str, int, str], ...] = (("yes", 1, "tumor"), ("no", 0, "good"))
"""(folder, label, defect_type) of the two labelled folders."""


def has_yes_no(folder: Path) -> bool:
    """Whether ``folder`` holds both ``yes/`` and ``no/``."""
    return folder.is_dir() and (folder / "yes").is_dir() and (folder / "no").is_dir()


def add_yes_no(builder: ManifestBuilder, base: Path, class_name: str) -> None:
    """Add every image of ``base/yes`` (label 1) and ``base/no`` (label 0); a missing folder is a problem."""
    for name, label, defect in FOLDERS:
        folder = base / name
        if not folder.is_dir():
            builder.problem(folder, f"is missing; the set needs yes/ (tumour) and no/ (no tumour) in {base}")
            continue
        for image in list_images(folder, builder.problems):
            builder.add(image, class_name=class_name, label=label, defect_type=defect)


def stems(folder: Path) -> list[str]:
    """The file stems directly in ``folder`` (hidden files aside), sorted; empty when it is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p.name.split(".")[0] for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
