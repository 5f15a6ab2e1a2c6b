"""MPDD (stepanje/MPDD): the MVTec layout with six metal-part categories (``good``, ``<stem>_mask.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.mvtec import scan_mvtec_like

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
