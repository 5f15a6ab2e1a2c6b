"""Manifests from arbitrary files and folders (what ``medad score`` reads), and the ``files`` kind.

Folders are searched recursively; each plain image becomes one row, each DICOM frame and NIfTI slice (axis 2)
one row. Labels are unknown and there are no masks.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.dicom import looks_like_dicom, make_dicom
from medad.data.manifest import (
    NO_IMAGES,
    ManifestBuilder,
    concat,
    is_ignored,
    is_image_file,
    link_problem,
    problems_error,
)
from medad.data.nifti import is_nifti, make_nifti
from medad.errors import DataWarning


def manifest_from_paths(paths: Sequence[str | Path], class_name: str = "object", strict: bool = True) -> pd.DataFrame:
    """Manifest for scoring arbitrary files and folders (images, DICOM, NIfTI); labels are unknown.

    Folders are searched recursively. Each plain image becomes one row, each DICOM frame and NIfTI slice
    (axis 2) one row.

    Args:
        paths: Files or folders.
        class_name: Class word for every row.
        strict: Raise one DataError listing every problem (missing path, non-image file).

    Returns:
        The manifest (dataset ``files``, variant ``paths``).
    """
    frames: list[pd.DataFrame] = []
    images = ManifestBuilder("files", Path("/"), "test", "paths")
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            images.problem(path, link_problem(path) or "does not exist; check the path")
            continue
        _warn_if_masks_inside(path)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if _listed(p))
        for file in files:
            broken = link_problem(file)
            if broken is not None and file == path:  # named on the command line: an error
                images.problem(file, broken)
            elif broken is not None:  # found in a folder: left out like a stray file, and said what it is
                warnings.warn(f"{file} {broken}; it was left out", DataWarning, stacklevel=2)
            elif is_image_file(file):
                images.add(file, class_name=class_name, label=None)
            elif is_nifti(file):
                frames.append(make_nifti(file, class_name=class_name, strict=False))
            elif looks_like_dicom(file):
                frames.append(make_dicom(file, class_name=class_name, strict=False))
            elif file == path:  # named on the command line: an error
                images.problem(file, "is not an image, DICOM or NIfTI file; remove it from the inputs")
            else:  # a stray file in a folder (notes, exports of other tools): left out, said once
                warnings.warn(
                    f"{file} is not an image, DICOM or NIfTI file; it was left out (move it out of the folder to "
                    "silence this)",
                    DataWarning,
                    stacklevel=2,
                )
    if not images.rows and not images.problems and not frames:  # name what was given, not a builder root
        for raw in paths:
            images.problem(
                raw, f"{NO_IMAGES} (no image, DICOM or NIfTI file in it); check the path or give the image files"
            )
    if images.rows or images.problems or not frames:
        frames.insert(0, images.build(strict=False))
    manifest = concat(frames)
    problems = manifest.attrs["problems"]
    if strict and problems:
        raise problems_error(problems, ", ".join(_input_name(p) for p in paths), "files")
    return manifest


def _input_name(raw: str | Path) -> str:
    """How an error names an input: its path, but a DICOM file by its name only (its folders can hold a patient's
    name, and the message reaches logs)."""
    path = Path(raw).expanduser()
    return path.name if path.is_file() and looks_like_dicom(path) else str(raw)


def _warn_if_masks_inside(path: Path) -> None:
    """Warn when a folder given as plain files holds images with their masks: every mask would be scored too."""
    from medad.data.folder import mask_layout

    layout = mask_layout(path)
    if layout is not None:
        warnings.warn(
            f"{path} holds images with their masks ({layout}): read as plain files, the masks are scored as images "
            "too; pass --kind folder (Python: kind='folder'), which scores the images and pairs each with its mask",
            DataWarning,
            stacklevel=3,
        )


def _listed(path: Path) -> bool:
    """Whether a found entry is read (or reported): files and unfollowable links, hidden clutter aside."""
    return not is_ignored(path) and (path.is_file() or link_problem(path) is not None)


def make_files(root: str | Path, split: str = "test", strict: bool = True, class_name: str = "object") -> pd.DataFrame:
    """Manifest of a plain folder (or file) of images, DICOM and NIfTI files, read as ``medad score`` reads it.

    Labels are unknown and there are no masks; ``split`` is accepted for the common interface and ignored.
    """
    return manifest_from_paths([root], class_name=class_name, strict=strict)


def _holds_readable_files(root: Path) -> bool:
    return root.is_dir() and any(
        is_image_file(p) or is_nifti(p) or looks_like_dicom(p)
        for p in root.rglob("*")
        if p.is_file() and not is_ignored(p)
    )


register_dataset(
    DatasetDescription(
        name="files",
        make=make_files,
        detectors=(
            Detector(
                130,
                "plain folder of images, DICOM or NIfTI files (read as `medad score` reads it; labels unknown)",
                _holds_readable_files,
            ),
        ),
    )
)
