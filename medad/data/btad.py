"""BTAD / BTech (``{01,02,03}/{train/ok,test/ok,test/ko,ground_truth/ko}``).

Normal images live in ``ok`` (not ``good``); images are ``.bmp`` or ``.png`` depending on the product and
masks ``.png`` or ``.bmp``, so images and masks are paired by stem whatever their extensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.mvtec import scan_mvtec_like


def make_btad(
    root: str | Path, split: str = "test", classes: Sequence[str] | None = None, strict: bool = True
) -> pd.DataFrame:
    """BTAD manifest.

    Args:
        root: ``BTech_Dataset_transformed`` (holding ``01``, ``02``, ``03``) or one product folder.
        split: ``test`` or ``train``.
        classes: Restrict to these products.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (dataset ``btad``, variant ``btech``; normal ``defect_type`` is ``ok``).
    """
    return scan_mvtec_like(
        root,
        dataset="btad",
        split=split,
        normal_names=("ok", "good"),
        variant="btech",
        classes=classes,
        strict=strict,
    )
