"""What a dataset kind registers: one :class:`DatasetDescription` per kind, kept in one catalogue.

A dataset module builds its manifest reader, says how ``auto`` recognises its layout, which splits it holds,
the words the prompts use for its classes and how to write a synthetic copy, and hands all of it to
:func:`register_dataset` in one call at import. Everything that dispatches by kind (``load_manifest``,
``detect_kind``, ``write_layout``, the protocol allow-lists, the prompt words) reads these descriptions
through :mod:`medad.data.registry`, which imports the built-in dataset modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from medad.errors import DataError

LayoutWriter = Callable[[Path, "SyntheticRequest"], None]
"""Writes a synthetic dataset of one layout into a folder (see :mod:`medad.data.synthetic`)."""


@dataclass(frozen=True)
class SyntheticRequest:
    """What ``write_layout`` was asked for, passed to a layout's writer.

    Attributes:
        n_normal: Normal images per class (layouts that hold normals).
        n_abnormal: Abnormal images per class.
        size: Image side in pixels.
        seed: Random seed (same seed, same bytes).
        classes: Category names (industrial layouts), or ``None`` for the layout's defaults.
    """

    n_normal: int
    n_abnormal: int
    size: int
    seed: int
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Detector:
    """One way ``auto`` recognises a layout of a kind.

    Detectors of every kind run in ascending ``order`` and the first whose ``matches`` is true gives the kind,
    so a layout that another one would also match (a VisA ``split_csv`` beside MVTec-like folders) needs the
    lower number.

    Attributes:
        order: Position among all detectors (the built-ins use 10, 20, ... with steps of 1 inside a group).
        layout: What it looks for, listed in the error when no layout matches.
        matches: Whether a root (a folder or a file) has this layout.
    """

    order: int
    layout: str
    matches: Callable[[Path], bool]


@dataclass(frozen=True)
class DatasetDescription:
    """Everything medad knows about one dataset kind.

    Attributes:
        name: The kind (``load_manifest(root, kind=name)``) and the manifest's ``dataset`` column.
        make: The manifest reader, ``make(root, split=..., strict=..., **options)``; its keyword parameters
            after ``root`` are the options ``load_manifest`` accepts for this kind.
        splits: The splits its layout can hold on disk, in the order ``load_all_splits`` reads them.
        detectors: How ``auto`` recognises it (none: only by name).
        class_name: The ``class_name`` of every row when the set has one class (the medical sets: ``polyp``,
            ...); ``mvtec_style``'s ``medical=`` option takes the kinds that have one.
        whole_file: A manifest file (CSV, jsonl) whose rows carry their split: ``split=None`` keeps them all
            and ``load_all_splits`` reads it once.
        in_release: One of the eight sets the released AD-DINOv3 code reads (``compat: reference``).
        reference_word: The release's class word for every class of the set; ``None``: the class name.
            Read only when ``in_release``.
        clean_words: ``clean``-mode words for class names that are no words (BTAD's numbered products).
        layouts: Synthetic layouts of this kind, by layout name, and their writers.
        title: How reports and tables name the set, with its source where two sets share a name
            (``BrainMRI (Kaggle)`` vs ``Brain MRI (BMAD, BraTS 2021)``); ``None``: the kind.
    """

    name: str
    make: Callable[..., pd.DataFrame]
    splits: tuple[str, ...] = ("test",)
    detectors: tuple[Detector, ...] = ()
    class_name: str | None = None
    whole_file: bool = False
    in_release: bool = False
    reference_word: str | None = None
    clean_words: Mapping[str, str] = field(default_factory=dict)
    layouts: Mapping[str, LayoutWriter] = field(default_factory=dict)
    title: str | None = None


_CATALOGUE: dict[str, DatasetDescription] = {}


def register_dataset(description: DatasetDescription) -> DatasetDescription:
    """Add a dataset kind to the catalogue (at the import of the module that defines it) and return it.

    Raises:
        DataError: The kind, one of its synthetic layouts or one of its detector orders is registered already
            (detection order must not depend on import order), or the name is ``auto``.
    """
    if description.name == "auto" or description.name in _CATALOGUE:
        raise DataError(f"dataset kind '{description.name}' is registered already; give the new kind another name")
    taken = {layout for known in _CATALOGUE.values() for layout in known.layouts}
    clash = sorted(taken & set(description.layouts))
    if clash:
        raise DataError(f"synthetic layout(s) {clash} are registered already; give '{description.name}' others")
    orders = {detector.order: known.name for known in _CATALOGUE.values() for detector in known.detectors}
    shared = sorted(orders.keys() & {detector.order for detector in description.detectors})
    if shared:
        raise DataError(
            f"detector order(s) {shared} of '{description.name}' are taken (by '{orders[shared[0]]}'); pick free ones"
        )
    _CATALOGUE[description.name] = description
    return description


def catalogue() -> Mapping[str, DatasetDescription]:
    """The registered descriptions by kind, in registration order (read-only view)."""
    return MappingProxyType(_CATALOGUE)
