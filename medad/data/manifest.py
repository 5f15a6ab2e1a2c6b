"""The manifest table every dataset module produces, and the helpers they share.

A manifest is a pandas DataFrame with the columns in :data:`COLUMNS` (see ``docs/architecture.md``). Dataset
modules collect rows and :class:`Problem` records with a :class:`ManifestBuilder`; :meth:`ManifestBuilder.build`
either raises one :class:`~medad.errors.DataError` listing every problem (``strict=True``) or keeps the problems
in ``manifest.attrs["problems"]`` for ``medad datasets check``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medad.errors import DataError
from medad.utils.privacy import case_id

COLUMNS: tuple[str, ...] = (
    "dataset",
    "class_name",
    "split",
    "image_path",
    "mask_path",
    "label",
    "defect_type",
    "group_id",
    "variant",
    "case_id",
    "source_format",
    "frame",
    "slice_axis",
    "mask_rule",
)
INT_COLUMNS: tuple[str, ...] = ("label", "frame", "slice_axis")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
JPEG_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg"})
IGNORED_NAMES: frozenset[str] = frozenset({"thumbs.db", "desktop.ini", "dicomdir"})
"""Names skipped silently: OS clutter, and the DICOMDIR index of a DICOM media folder (it holds no image)."""
MAX_LISTED_PROBLEMS = 20
NO_IMAGES = "no images found"
"""Start of the problem :meth:`ManifestBuilder.build` records when a split holds no images at all."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: the file it concerns and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def mask_rule_for(mask_path: str | Path) -> str:
    """Return the binarisation rule for a mask file: ``>127`` for JPEG (lossy), ``>0`` otherwise."""
    return ">127" if Path(mask_path).suffix.lower() in JPEG_EXTENSIONS else ">0"


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of the plain image extensions medad reads."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_ignored(path: Path) -> bool:
    """Whether a directory entry is OS clutter (hidden files, ``Thumbs.db``) that is skipped silently."""
    return path.name.startswith(".") or path.name.lower() in IGNORED_NAMES


def is_utf8(path: Path | str) -> bool:
    """Whether a path is valid UTF-8 (``os.fsdecode`` keeps undecodable bytes as lone surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: Path | str) -> str:
    """A path that can be printed: undecodable bytes shown as ``\\xNN`` escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def link_problem(path: Path) -> str | None:
    """Why ``path`` cannot be followed although it is there: a symbolic link loop (in it or a folder above it) or
    a link whose target is missing; ``None`` otherwise (a plain file, folder, or nothing at all)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return (
                "is a symbolic link loop (following it leads back to itself); replace the link with the real file or "
                "folder, or remove it"
            )
        if os.path.islink(path):
            return f"is a broken symbolic link (its target {os.readlink(path)} does not exist); fix or remove the link"
    return None


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise a DataError naming it and what was expected."""
    broken = link_problem(path)
    if broken is not None:
        raise DataError(f"{what} {path} {broken}")
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; check the path (and the --kind) you gave")
    if not path.is_dir():
        raise DataError(f"{what} {path} is not a folder; give the folder that holds the dataset")
    return path


def list_images(
    folder: Path, problems: list[Problem] | None = None, extensions: Iterable[str] | None = None
) -> list[Path]:
    """Sorted image files directly in ``folder``.

    Args:
        folder: The folder to list.
        problems: If given, every other (non-hidden) file is recorded here as "not an image"; if ``None`` such
            files are skipped silently.
        extensions: Lower-case suffixes to accept; defaults to :data:`IMAGE_EXTENSIONS`.

    Returns:
        The matching files, sorted by name.
    """
    accept = frozenset(extensions) if extensions is not None else IMAGE_EXTENSIONS
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if is_ignored(entry) or entry.is_dir():
            continue
        if entry.suffix.lower() in accept:
            found.append(entry)
        elif problems is not None:
            problems.append(
                Problem(str(entry), f"is not an image file (expected one of {sorted(accept)}); remove or move it")
            )
    return found


def normalise_stem(path: Path | str, suffixes: Sequence[str] = ()) -> str:
    """Pairing key of a file: lower-case stem with one trailing mask suffix (e.g. ``_mask``) removed."""
    stem = Path(path).name.split(".")[0].lower()
    for suffix in suffixes:
        if suffix and stem.endswith(suffix.lower()):
            return stem[: -len(suffix)]
    return stem


@dataclass
class Pairing:
    """Result of pairing images with masks by normalised stem."""

    pairs: dict[Path, Path] = field(default_factory=dict)
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)


def pair_by_stem(
    images: Sequence[Path],
    masks: Sequence[Path],
    mask_suffixes: Sequence[str] = ("_mask",),
    key: Any = None,
) -> Pairing:
    """Pair images with masks by normalised stem (never by sorted position).

    Args:
        images: Image files.
        masks: Mask files.
        mask_suffixes: Suffixes stripped from mask stems before matching (e.g. ``_mask``, ``_segmentation``).
        key: Optional ``callable(path, is_mask) -> str`` replacing the default stem normalisation.

    Returns:
        A :class:`Pairing` with the pairs, the unpaired files on both sides and files whose key collides.
    """

    def key_of(path: Path, is_mask: bool) -> str:
        if key is not None:
            return key(path, is_mask)
        return normalise_stem(path, mask_suffixes if is_mask else ())

    result = Pairing()
    by_key: dict[str, Path] = {}
    for mask in masks:
        k = key_of(mask, True)
        if k in by_key:
            result.duplicates.append(mask)
            continue
        by_key[k] = mask
    used: set[str] = set()
    seen_images: set[str] = set()
    for image in images:
        k = key_of(image, False)
        if k in seen_images:
            result.duplicates.append(image)
            continue
        seen_images.add(k)
        if k in by_key:
            result.pairs[image] = by_key[k]
            used.add(k)
        else:
            result.images_without_mask.append(image)
    result.masks_without_image = [m for k, m in by_key.items() if k not in used]
    return result


def pairing_problems(pairing: Pairing, mask_dir: Path, require_mask: bool = True) -> list[Problem]:
    """Turn a :class:`Pairing`'s unpaired and duplicate files into problems that name each file."""
    problems: list[Problem] = []
    broken = link_problem(mask_dir)
    if broken is not None and pairing.images_without_mask:  # one cause, named once: not "has no mask" per image
        return [Problem(str(mask_dir), broken)]
    if require_mask:
        for image in pairing.images_without_mask:
            problems.append(
                Problem(
                    str(image),
                    link_problem(image)
                    or f"has no mask in {mask_dir} (matched by file stem); add the mask or remove the image",
                )
            )
    for mask in pairing.masks_without_image:
        problems.append(
            Problem(
                str(mask),
                link_problem(mask)
                or "is a mask without an image (matched by file stem); add the image or remove it",
            )
        )
    for path in pairing.duplicates:
        problems.append(Problem(str(path), "has the same stem as another file in its folder; keep one file per stem"))
    return problems


class ManifestBuilder:
    """Collects manifest rows and problems for one dataset split.

    Args:
        dataset: The dataset kind written in the ``dataset`` column.
        root: The dataset root; ``case_id`` is derived from each image's path relative to it.
        split: The split written in the ``split`` column.
        variant: The detected layout variant.
    """

    def __init__(self, dataset: str, root: Path, split: str, variant: str) -> None:
        self.dataset = dataset
        self.root = Path(root)
        self.split = split
        self.variant = variant
        self.rows: list[dict[str, Any]] = []
        self.problems: list[Problem] = []

    def add(
        self,
        image_path: Path | str,
        *,
        class_name: str,
        label: int | None,
        mask_path: Path | str | None = None,
        defect_type: str = "",
        group_id: str | None = None,
        source_format: str = "image",
        frame: int | None = None,
        slice_axis: int | None = None,
        split: str | None = None,
    ) -> None:
        """Add one row; ``case_id`` and the default ``group_id`` come from the image's relative path.

        A path that is not valid UTF-8 (a Latin-1 name from an old system) is recorded as a problem instead: it
        could not be written to the manifest, tables or messages.
        """
        for path in (image_path, mask_path):
            if not path:
                continue
            if not is_utf8(path):
                self.problem(printable_path(path), "has a name that is not valid UTF-8; rename it (e.g. convmv)")
                return
            broken = link_problem(Path(path))
            if broken is not None:
                self.problem(path, broken)
                return
        image = Path(image_path).resolve()
        try:
            rel = image.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            rel = image.as_posix()
        key = f"{self.dataset}/{rel}" + (f"#{frame}" if frame is not None else "")
        cid = case_id(key)
        mask = str(Path(mask_path).resolve()) if mask_path else ""
        self.rows.append(
            {
                "dataset": self.dataset,
                "class_name": class_name,
                "split": split or self.split,
                "image_path": str(image),
                "mask_path": mask,
                "label": label,
                "defect_type": defect_type,
                "group_id": group_id or cid,
                "variant": self.variant,
                "case_id": cid,
                "source_format": source_format,
                "frame": frame,
                "slice_axis": slice_axis,
                "mask_rule": mask_rule_for(mask) if mask and source_format == "image" else ">0",
            }
        )

    def problem(self, path: Path | str, message: str) -> None:
        """Record a problem about ``path``."""
        self.problems.append(Problem(str(path), message))

    def build(self, strict: bool = True) -> pd.DataFrame:
        """Return the manifest; with ``strict`` raise one DataError listing every problem instead.

        An empty result is itself a problem (the root holds no images for this split).
        """
        if not self.rows and not self.problems:
            self.problem(
                self.root,
                f"{NO_IMAGES} for dataset '{self.dataset}' split '{self.split}'; check the folder and --kind/split",
            )
        if strict and self.problems:
            raise problems_error(self.problems, self.root, self.dataset)
        return to_frame(self.rows, self.problems)


def problems_error(problems: Sequence[Problem], root: Path | str, dataset: str) -> DataError:
    """One DataError listing (up to :data:`MAX_LISTED_PROBLEMS`) problems, each with its file."""
    shown = "; ".join(str(p) for p in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    tail = f"; and {more} more (run `medad datasets check {root} --kind {dataset}` to list all)" if more > 0 else ""
    return DataError(f"{len(problems)} problem(s) in dataset {root} ({dataset}): {shown}{tail}")


def to_frame(rows: Sequence[dict[str, Any]], problems: Sequence[Problem] = ()) -> pd.DataFrame:
    """Build a manifest DataFrame with the contract's columns and dtypes from row dicts."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for column in COLUMNS:
        if column in INT_COLUMNS:
            frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
        else:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    frame = frame.reset_index(drop=True)
    frame.attrs["problems"] = list(problems)
    return frame


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate manifests (keeping the dtypes, a fresh RangeIndex and the union of their problems)."""
    problems = [p for f in frames for p in f.attrs.get("problems", [])]
    rows = [r for f in frames for r in f.to_dict("records")]
    return to_frame([{k: (None if v is pd.NA else v) for k, v in r.items()} for r in rows], problems)


def add_paired_folders(
    builder: ManifestBuilder,
    image_dir: Path,
    mask_dir: Path,
    *,
    class_name: str,
    extensions: Iterable[str] | None = None,
    mask_suffixes: Sequence[str] = ("_mask",),
    key: Any = None,
) -> None:
    """Add every image of ``image_dir`` as abnormal (label 1) with its mask from ``mask_dir``, by stem.

    Unpaired images and masks, duplicates and non-image files are recorded as problems.
    """
    images = list_images(image_dir, builder.problems, extensions)
    if not mask_dir.is_dir():
        builder.problem(mask_dir, f"is missing; the images in {image_dir} need their masks there")
        return
    masks = list_images(mask_dir, builder.problems, extensions)
    pairing = pair_by_stem(images, masks, mask_suffixes, key=key)
    builder.problems.extend(pairing_problems(pairing, mask_dir))
    for image in images:
        if image in pairing.pairs:
            builder.add(image, class_name=class_name, label=1, mask_path=pairing.pairs[image])


def has_images_folder(root: Path, name_part: str = "") -> bool:
    """Whether ``root`` is a folder holding ``images/`` whose name contains ``name_part`` (case-insensitive)."""
    return root.is_dir() and (root / "images").is_dir() and name_part in root.name.lower()


def holds_only(root: Path, test: Callable[[Path], bool]) -> bool:
    """Whether ``root`` is a folder whose files (directly in it, hidden ones aside) all pass ``test``; not empty."""
    if not root.is_dir():
        return False
    files = [p for p in root.iterdir() if p.is_file() and not is_ignored(p)]
    return bool(files) and all(test(p) for p in files)
