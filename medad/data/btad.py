"""BTAD / BTech (``{01,02,03}/{train/ok,test/ok,test/ko,ground_truth/ko}``).

Normal images live in ``ok`` (not ``good``); images are ``.bmp`` or ``.png`` depending on the product and
masks ``.png`` or ``.bmp``, so images and masks are paired by stem whatever their extensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.mvtec import category_dirs, scan_mvtec_like
from medad.data.synthetic import sampler, write_mvtec_tree


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


_SYNTHETIC_EXTENSIONS: dict[str, tuple[str, str]] = {
    "01": (".bmp", ".png"),
    "02": (".png", ".png"),
    "03": (".bmp", ".bmp"),
}
"""(image, mask) extensions of the synthetic products, mixed as in the release."""


def _has_ok_folders(root: Path) -> bool:
    """An MVTec-like root whose normal folders are BTAD's ``ok``."""
    categories = category_dirs(root) if root.is_dir() else []
    return any((c / "test" / "ok").is_dir() or (c / "train" / "ok").is_dir() for c in categories)


def _write_btad(root: Path, request: SyntheticRequest) -> None:
    write_mvtec_tree(
        root,
        sampler(request, "industrial"),
        request.classes or ("01", "02", "03"),
        request.n_normal,
        request.n_abnormal,
        normal="ok",
        defect="ko",
        image_ext=lambda c: _SYNTHETIC_EXTENSIONS.get(c, (".png", ".png"))[0],
        mask_ext=lambda c: _SYNTHETIC_EXTENSIONS.get(c, (".png", ".png"))[1],
        mask_suffix="",
    )


register_dataset(
    DatasetDescription(
        name="btad",
        make=make_btad,
        splits=("train", "test"),
        detectors=(Detector(70, "MVTec-like <class>/{train,test}/ok (BTAD)", _has_ok_folders),),
        in_release=True,
        clean_words={"01": "product", "02": "product", "03": "product"},
        layouts={"btad": _write_btad},
    )
)
