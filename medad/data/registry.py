"""The catalogue of dataset kinds, read by everything that dispatches by kind or layout.

Importing this module imports every built-in dataset module, each of which registers its
:class:`~medad.data.description.DatasetDescription`; a third-party kind registers the same way
(:func:`~medad.data.description.register_dataset`). Here: lookup (:func:`list_datasets`,
:func:`dataset_description`), ``auto`` detection (:func:`detect_kind`), manifest loading (:func:`load_manifest`,
:func:`load_all_splits`), synthetic layouts (:func:`list_layouts`, :func:`write_layout`) and the class words
the prompts read (:func:`reference_class_word`, :func:`clean_class_word`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# Imported for their register_dataset() call: the built-in kinds.
from medad.data import (  # noqa: F401
    bmad,
    br35h,
    brainmri_kaggle,
    btad,
    clinicdb,
    colondb,
    dicom,
    folder,
    headct,
    isic,
    jsonl,
    kvasir,
    metajson,
    mpdd,
    mvtec,
    mvtec_style,
    nifti,
    paths,
    tabular,
    tn3k,
    visa,
)
from medad.data.description import DatasetDescription, Detector, LayoutWriter, SyntheticRequest, catalogue
from medad.data.manifest import NO_IMAGES, concat, problems_error
from medad.errors import DataError


def list_datasets() -> list[str]:
    """The registered dataset kinds, sorted (``load_manifest`` also takes ``auto``)."""
    return sorted(catalogue())


def dataset_description(kind: str) -> DatasetDescription:
    """The description of a registered kind.

    Raises:
        DataError: ``kind`` is not registered (the message lists the kinds).
    """
    known = catalogue()
    if kind not in known:
        raise DataError(f"unknown dataset kind '{kind}'; use one of {', '.join([*list_datasets(), 'auto'])}")
    return known[kind]


def dataset_title(kind: str) -> str:
    """How reports name a dataset kind: its description's ``title`` (which says the source, e.g. ``BrainMRI
    (Kaggle)`` vs ``Brain MRI (BMAD, BraTS 2021)``), else the kind itself (also for kinds not registered)."""
    description = catalogue().get(kind)
    return (description.title or kind) if description is not None else kind


def _detectors() -> list[tuple[Detector, str]]:
    """Every registered detector with its kind, in the order ``auto`` tries them."""
    found = [(detector, d.name) for d in catalogue().values() for detector in d.detectors]
    return sorted(found, key=lambda pair: pair[0].order)


def detect_kind(root: str | Path) -> str:
    """Detect the dataset kind of ``root``; raise a DataError listing every layout tried on failure."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"dataset root {path} does not exist; check the path")
    tried = []
    for detector, kind in _detectors():
        if detector.matches(path):
            return kind
        tried.append(detector.layout)
    raise DataError(f"{path} is not a known dataset layout (tried: {'; '.join(tried)}); pass --kind explicitly")


def _resolve(root: str | Path, kind: str) -> DatasetDescription:
    if kind != "auto":
        return dataset_description(kind)
    return catalogue()[detect_kind(root)]


def _check_options(description: DatasetDescription, options: dict[str, Any]) -> None:
    accepted = list(inspect.signature(description.make).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"option(s) {unknown} do not apply to dataset kind '{description.name}'; it accepts {accepted}")


def check_options(root: str | Path, kind: str, options: dict[str, Any]) -> None:
    """Refuse reader options the kind's reader does not take, before reading (``auto``: the detected kind)."""
    _check_options(_resolve(root, kind), options)


def load_manifest(root: str | Path, /, kind: str = "auto", split: str | None = "test", **options: Any) -> pd.DataFrame:
    """Build the manifest of a dataset in its public layout.

    Args:
        root: Dataset root (or a file for ``csv``/``jsonl``/``dicom``/``nifti``).
        kind: One of :func:`list_datasets`; ``auto`` detects it.
        split: Split to read (``None`` keeps every row of a CSV or jsonl manifest).
        **options: Passed to the kind's reader (e.g. ``strict``, ``classes``, ``medical``, ``axis``, jsonl's
            ``root``).

    Returns:
        The manifest DataFrame (columns in :data:`medad.data.manifest.COLUMNS`).

    Raises:
        DataError: Unknown kind or option, missing/unknown root, or (``strict=True``, the default) any problem.
    """
    description = _resolve(root, kind)
    _check_options(description, options)
    if split is None and not description.whole_file:
        split = "test"
    return description.make(root, split=split, **options)


def load_all_splits(root: str | Path, /, kind: str = "auto", **options: Any) -> pd.DataFrame:
    """One manifest with every split the layout holds (its description's ``splits``; CSV and jsonl: all rows).

    A split the layout does not hold (no folder, no rows) is skipped; a split that is there but has problems
    raises them (``strict=True``) or keeps them in ``attrs["problems"]``.

    Args:
        root: Dataset root (or a file for ``csv``/``jsonl``/``dicom``/``nifti``).
        kind: One of :func:`list_datasets`; ``auto`` detects it.
        **options: Passed to the kind's reader.

    Returns:
        The manifest, rows of each split in the order of the description's ``splits``.

    Raises:
        DataError: Unknown kind or option, or no split holds any image, or (strict) any problem.
    """
    description = _resolve(root, kind)
    if description.whole_file:
        return load_manifest(root, description.name, split=None, **options)
    _check_options(description, options)
    strict = bool(options.pop("strict", True))
    frames: list[pd.DataFrame] = []
    first_error: DataError | None = None
    for split in description.splits:
        try:
            frame = description.make(root, split=split, strict=False, **options)
        except DataError as exc:
            first_error = first_error or exc
            continue
        problems = frame.attrs.get("problems", [])
        if frame.empty and all(p.message.startswith(NO_IMAGES) for p in problems):
            continue
        if strict and problems:
            raise problems_error(problems, root, description.name)
        frames.append(frame)
    if not frames:
        if first_error is not None:
            raise first_error
        splits = ", ".join(description.splits)
        raise DataError(f"dataset {root} ({description.name}) holds no images in any split ({splits}); check the path")
    return concat(frames)


def _layout_writers() -> dict[str, LayoutWriter]:
    return {layout: writer for d in catalogue().values() for layout, writer in d.layouts.items()}


def list_layouts() -> list[str]:
    """The synthetic layouts :func:`write_layout` writes (each registered by its dataset kind), sorted."""
    return sorted(_layout_writers())


def write_layout(
    out: str | Path,
    layout: str,
    n_normal: int = 2,
    n_abnormal: int = 3,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write a small synthetic dataset (exact masks) in a native layout (see :mod:`medad.data.synthetic`).

    Args:
        out: Output root (created).
        layout: One of :func:`list_layouts`.
        n_normal: Normal images per class (industrial layouts and ``folder``; the medical sets have none).
        n_abnormal: Abnormal images per class.
        size: Image side in pixels.
        seed: Random seed (same seed, same bytes).
        classes: Category names for the industrial layouts (defaults per layout).

    Returns:
        The root to pass to :func:`load_manifest` (always ``out``; for ``kvasir`` it holds ``Kvasir-SEG/``, for
        ``isic-anomalyclip`` ``skin/`` and ``meta.json``).

    Raises:
        DataError: Unknown layout, a size under 16 or a negative count.
    """
    writers = _layout_writers()
    if layout not in writers:
        raise DataError(f"unknown synthetic layout '{layout}'; use one of {', '.join(sorted(writers))}")
    if size < 16 or n_normal < 0 or n_abnormal < 0:
        raise DataError("synthetic datasets need size >= 16 and non-negative image counts")
    root = Path(out).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    request = SyntheticRequest(n_normal, n_abnormal, size, seed, tuple(classes) if classes else None)
    writers[layout](root, request)
    return root


def reference_class_words() -> dict[str, str | None]:
    """The released AD-DINOv3 code's class word per dataset kind (``compat: reference``), for its eight sets.

    The release takes the 4th-last component of each image path, and its loaders only read its own layouts, so
    the words are fixed per dataset whatever a user's folders are called: ``None`` means the class folder name
    (MVTec AD, MPDD, BTAD's ``01``/``02``/``03``), a string is the one word of every class of the dataset.
    """
    return {d.name: d.reference_word for d in catalogue().values() if d.in_release}


def reference_class_word(dataset: str, class_name: str) -> str | None:
    """The released code's class word of a class of dataset kind ``dataset``; ``None`` outside its eight sets."""
    description = catalogue().get(dataset)
    if description is None or not description.in_release:
        return None
    return description.reference_word or class_name


def clean_class_word(dataset: str, class_name: str) -> str | None:
    """medad's ``clean`` word for a class whose name is no word (e.g. BTAD ``01``); ``None`` for the others.

    Other classes use their class name (see ``medad.models.prompt_word``); protocols override per class.
    """
    description = catalogue().get(dataset)
    return None if description is None else description.clean_words.get(class_name)
