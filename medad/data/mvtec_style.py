"""The MVTec-style re-packaging of medical sets used by the ZSAD research repos.

AdaCLIP / AD-DINOv3 lay ISIC, CVC-ClinicDB, CVC-ColonDB and TN3K out as ``<root>/<cls>/test/<type>/`` with
masks in ``<root>/<cls>/ground_truth/<type>/`` (same stem, optionally ``_mask``). Which medical set it is
decides the dataset name and the canonical class word.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, catalogue, register_dataset
from medad.data.mvtec import category_dirs, scan_mvtec_like
from medad.data.synthetic import sampler, write_mvtec_tree
from medad.errors import DataError


def make_mvtec_style(
    root: str | Path, split: str = "test", medical: str | None = None, strict: bool = True
) -> pd.DataFrame:
    """Manifest of an MVTec-style re-packaged dataset.

    Args:
        root: Folder holding ``<cls>/test/...`` (or one ``<cls>`` folder).
        split: Sub-folder of each class (``test``).
        medical: Which medical set it is (``isic``, ``clinicdb``, ``colondb``, ``tn3k``): the ``dataset``
            column becomes that name and ``class_name`` its canonical class word. ``None`` keeps folder names
            and dataset ``mvtec_style``.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``mvtec-style``).
    """
    words = {d.name: d.class_name for d in catalogue().values() if d.class_name}
    if medical is not None and medical not in words:
        raise DataError(f"unknown medical set '{medical}' for mvtec_style; use one of {sorted(words)}")
    word = words.get(medical) if medical else None
    return scan_mvtec_like(
        root,
        dataset=medical or "mvtec_style",
        split=split,
        normal_names=("good", "ok", "normal"),
        mask_suffixes=("_mask", "_segmentation"),
        variant="mvtec-style",
        class_name=(lambda _category: word) if word else None,
        strict=strict,
    )


def _write_mvtec_style(root: Path, request: SyntheticRequest) -> None:
    """A medical set re-packaged as ``<cls>/test/<type>`` + ``<cls>/ground_truth/<type>`` (no train split)."""
    samples = sampler(request, "medical")
    classes = request.classes or ("skin",)
    write_mvtec_tree(root, samples, classes, request.n_normal, request.n_abnormal, train=False, mask_suffix="")


register_dataset(
    DatasetDescription(
        name="mvtec_style",
        make=make_mvtec_style,
        splits=("train", "test"),
        detectors=(
            Detector(
                74,
                "MVTec-like <class>/test/<type> of other classes (mvtec_style)",
                lambda r: r.is_dir() and bool(category_dirs(r)),
            ),
        ),
        layouts={"mvtec_style": _write_mvtec_style},
    )
)
