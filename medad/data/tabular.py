"""A CSV manifest: one row per image with at least ``image_path``.

Optional columns: ``mask_path``, ``label`` (0/1/empty; an empty label of a row with a mask is read from the mask,
with a warning: a lesion pixel means 1, an empty mask 0), ``class_name``, ``split``, ``defect_type``,
``group_id``, ``source_format``, ``frame``, ``slice_axis``. Relative paths are resolved against the CSV's
folder. A manifest written by medad (``DataFrame.to_csv``) reads back unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.labels import infer_labels_from_masks
from medad.data.manifest import ManifestBuilder, link_problem
from medad.errors import DataError


def _int_or_none(value: object) -> int | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    return int(float(str(value)))


def make_csv(
    root: str | Path, split: str | None = None, class_name: str = "object", strict: bool = True
) -> pd.DataFrame:
    """Manifest from a CSV file.

    Args:
        root: The CSV file.
        split: Keep only rows of this split (``None``: all rows; rows without a split get ``test``).
        class_name: Class word for rows without ``class_name``.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (dataset and variant ``csv``).
    """
    path = Path(root).expanduser()
    if not path.is_file():
        raise DataError(f"CSV manifest {path} does not exist; give the path of a .csv file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"CSV manifest {path} cannot be parsed ({type(exc).__name__}); fix the file") from None
    if "image_path" not in table.columns:
        raise DataError(f"CSV manifest {path} has no 'image_path' column (found {list(table.columns)}); add it")
    if table.empty:
        raise DataError(f"CSV manifest {path} has a header but no rows; add one line per image (image_path,...)")
    base = path.parent
    builder = ManifestBuilder("csv", base, split or "test", "csv")
    for number, line in enumerate(table.to_dict("records"), start=2):
        row_split = line.get("split") or "test"
        if split is not None and row_split != split:
            continue
        image = base / line["image_path"]
        mask = base / line["mask_path"] if line.get("mask_path") else None
        source = line.get("source_format") or "image"
        try:
            label = _int_or_none(line.get("label"))
            frame = _int_or_none(line.get("frame"))
            axis = _int_or_none(line.get("slice_axis"))
        except ValueError:
            builder.problem(path, f"line {number}: label/frame/slice_axis must be integers; fix the value")
            continue
        if label not in (None, 0, 1):
            builder.problem(path, f"line {number}: label {label} is not 0, 1 or empty; fix the value")
            continue
        if not image.is_file():
            why = link_problem(image) or "does not exist; fix the path"
            builder.problem(image, f"(line {number} of {path.name}) {why}")
            continue
        if mask is not None and not mask.is_file():
            why = link_problem(mask) or "does not exist; fix the mask path"
            builder.problem(mask, f"(line {number} of {path.name}) {why}")
            continue
        builder.add(
            image,
            class_name=line.get("class_name") or class_name,
            label=label,
            mask_path=mask,
            defect_type=line.get("defect_type", ""),
            group_id=line.get("group_id") or None,
            source_format=source,
            frame=frame,
            slice_axis=axis,
            split=row_split,
        )
    manifest = builder.build(strict)
    if {"label", "mask_path"} & set(table.columns):  # a labelled dataset: say which labels are read from masks
        infer_labels_from_masks(manifest, f"CSV manifest {path.name}")
    return manifest


register_dataset(
    DatasetDescription(
        name="csv",
        make=make_csv,
        detectors=(Detector(100, "a CSV manifest file", lambda r: r.is_file() and r.suffix.lower() == ".csv"),),
        whole_file=True,
    )
)
