"""Image labels where a dataset gives none: read from its masks, and refused where nothing can be evaluated.

A researcher's CSV often has ``image_path,mask_path`` and no ``label``: a mask with a lesion pixel then means
abnormal (1) and an empty mask normal (0). The inference is said once (a :class:`~medad.errors.DataWarning`), so
no metric rests on a label nobody wrote without a word; rows left without a label are said too.
"""

from __future__ import annotations

import warnings

import pandas as pd

from medad.data.readers import read_mask
from medad.errors import DataError, DataWarning

FIX = "add a 'label' column (1 abnormal, 0 normal) to set them"


class LabelsInferred(DataWarning):
    """Labels were read from masks: said on stderr, but not a problem of the dataset (``datasets check`` stays
    clean)."""


def infer_labels_from_masks(manifest: pd.DataFrame, source: str) -> pd.DataFrame:
    """Fill the unknown labels of rows with a mask from the mask (any lesion pixel: 1, empty: 0), in place.

    Rows whose mask cannot be read keep their unknown label (the read error is the reading's own problem). A
    :class:`DataWarning` names ``source`` and the counts inferred; another one the rows still without a label.

    Returns:
        The manifest.
    """
    todo = manifest.index[manifest["label"].isna() & (manifest["mask_path"] != "")]
    counts = {0: 0, 1: 0}
    for index in todo:
        try:
            label = int(read_mask(manifest.loc[index].to_dict()).any())
        except DataError:
            continue
        manifest.at[index, "label"] = label
        counts[label] += 1
    if counts[0] or counts[1]:
        warnings.warn(
            f"{source} gives no label for {counts[0] + counts[1]} image(s) with a mask: inferred from the masks "
            f"({counts[1]} abnormal: the mask has a lesion pixel; {counts[0]} normal: the mask is empty); {FIX}",
            LabelsInferred,
            stacklevel=2,
        )
    unknown = int(manifest["label"].isna().sum())
    if unknown and len(manifest):
        warnings.warn(
            f"{source}: {unknown} of {len(manifest)} image(s) have no label and no mask, so image-level metrics "
            f"cannot use them; {FIX}, or a 'mask_path' column",
            DataWarning,
            stacklevel=2,
        )
    return manifest


def check_evaluable(manifest: pd.DataFrame) -> None:
    """Refuse a manifest on which no metric can be computed: no image has a label and none has a mask.

    Raises:
        DataError: naming what to add.
    """
    if len(manifest) and manifest["label"].isna().all() and not (manifest["mask_path"].astype(str) != "").any():
        raise DataError(
            f"none of the {len(manifest)} images has a label or a mask, so no metric can be computed; give labels "
            "(a 'label' column of 1 abnormal / 0 normal, or a layout with normal and abnormal folders) or masks "
            "(a 'mask_path' column, a masks folder: --masks-dir, or a reader's masks option such as NIfTI's "
            "--data-option masks=DIR) - see docs/datasets.md"
        )


def empty_masks_as_normal(manifest: pd.DataFrame, source: str) -> pd.DataFrame:
    """Relabel, in place, the abnormal rows whose mask is empty as normal (label 0), saying how many.

    A folder layout marks every image with a mask abnormal; a researcher's own folder often gives its normal
    images an empty mask, which the same rule as :func:`infer_labels_from_masks` reads as normal.
    """
    empty = 0
    for index in manifest.index[(manifest["label"] == 1) & (manifest["mask_path"] != "")]:
        try:
            lesion = bool(read_mask(manifest.loc[index].to_dict()).any())
        except DataError:
            continue
        if not lesion:
            manifest.at[index, "label"] = 0
            empty += 1
    if empty:
        warnings.warn(
            f"{source}: {empty} image(s) have an empty mask and are read as normal (label 0), the others as abnormal "
            "(their mask has a lesion pixel); move the normal images to normals/ to say so without a mask",
            LabelsInferred,
            stacklevel=2,
        )
    return manifest
