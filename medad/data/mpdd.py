"""MPDD (stepanje/MPDD): the MVTec layout with six metal-part categories (``good``, ``<stem>_mask.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.mvtec import holds_mvtec_like, scan_mvtec_like
from medad.data.synthetic import sampler, write_mvtec_tree

MPDD_CLASSES: tuple[str, ...] = (
    "bracket_black",
    "bracket_brown",
    "bracket_white",
    "connector",
    "metal_plate",
    "tubes",
)


def make_mpdd(
    root: str | Path, split: str = "test", classes: Sequence[str] | None = None, strict: bool = True
) -> pd.DataFrame:
    """MPDD manifest (same layout as MVTec AD).

    Args:
        root: The MPDD root holding the category folders (or one category folder).
        split: ``test`` or ``train``.
        classes: Restrict to these categories.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (dataset ``mpdd``, variant ``mvtec``).
    """
    return scan_mvtec_like(root, dataset="mpdd", split=split, classes=classes, strict=strict)


def _write_mpdd(root: Path, request: SyntheticRequest) -> None:
    classes = request.classes or ("tubes", "connector")
    write_mvtec_tree(root, sampler(request, "industrial"), classes, request.n_normal, request.n_abnormal)


register_dataset(
    DatasetDescription(
        name="mpdd",
        make=make_mpdd,
        splits=("train", "test"),
        detectors=(
            Detector(71, "MVTec-like <class>/test/<type> of MPDD classes", lambda r: holds_mvtec_like(r, MPDD_CLASSES)),
        ),
        in_release=True,
        layouts={"mpdd": _write_mpdd},
    )
)
