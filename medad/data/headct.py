"""HeadCT: Kaggle "Head CT - hemorrhage" (felipekitamura/head-ct-hemorrhage), 200 PNG slices and a labels CSV.

As downloaded: ``labels.csv`` (header ``id, hemorrhage``: the second column name starts with a space) beside
``head_ct/head_ct/000.png`` ... ``199.png`` (the folder is nested twice). The CSV's ids are integers (``7``) while
the file names are zero-padded (``007.png``): a row is matched to the file whose stem is the same integer, never
by string and never by sorted position; an id without a file, a file without an id, a repeated id and a
``hemorrhage`` value other than 0/1 are each reported. Image labels only (``hemorrhage`` 1: abnormal, 0: normal),
no masks, so pixel metrics are not applicable; the set has no official split (``split=`` only names the rows).
The images come in several sizes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, list_images, require_dir
from medad.data.synthetic import sampler, save_image
from medad.errors import DataError

CLASS_NAME = "brain"
"""The class word of every row (AnomalyCLIP's ``generate_dataset_json/head_ct.py`` uses ``brain``)."""
LABELS_CSV = "labels.csv"
IMAGE_FOLDERS: tuple[str, ...] = ("head_ct/head_ct", "head_ct")
"""Where the PNGs are, tried in order: the Kaggle download nests ``head_ct/`` twice; a flattened copy once."""
ID_COLUMN, LABEL_COLUMN = "id", "hemorrhage"


def _image_dir(root: Path) -> Path | None:
    return next((root / name for name in IMAGE_FOLDERS if (root / name).is_dir()), None)


def looks_like_headct(root: Path) -> bool:
    """Whether ``root`` holds ``labels.csv`` and a ``head_ct/`` folder (the Kaggle download)."""
    return root.is_dir() and (root / LABELS_CSV).is_file() and _image_dir(root) is not None


def _read_labels(builder: ManifestBuilder, csv_path: Path) -> dict[int, tuple[int, int]]:
    """``{id: (label, line)}`` from ``labels.csv``; bad and repeated rows are recorded as problems."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        columns = [name.strip() for name in reader.fieldnames or []]
        if ID_COLUMN not in columns or LABEL_COLUMN not in columns:
            raise DataError(
                f"{csv_path} has columns {columns}, not '{ID_COLUMN}' and '{LABEL_COLUMN}'; give the labels.csv of "
                "the Kaggle Head CT - hemorrhage download"
            )
        labels: dict[int, tuple[int, int]] = {}
        for row in reader:
            line = reader.line_num
            values = {str(key).strip(): str(value or "").strip() for key, value in row.items()}
            where = f"{csv_path}:{line}"
            try:
                ident, label = int(values[ID_COLUMN]), int(values[LABEL_COLUMN])
            except ValueError:
                found = f"id '{values[ID_COLUMN]}' / hemorrhage '{values[LABEL_COLUMN]}'"
                builder.problem(where, f"{found} are not integers; the row needs an integer id and 0 or 1")
                continue
            if label not in (0, 1):
                builder.problem(where, f"hemorrhage is {label}; it must be 1 (hemorrhage) or 0 (normal)")
            elif ident in labels:
                builder.problem(where, f"id {ident} is given again (first on line {labels[ident][1]}); keep one row")
            else:
                labels[ident] = (label, line)
    return labels


def _images_by_id(builder: ManifestBuilder, image_dir: Path) -> dict[int, Path]:
    """The PNGs by the integer their stem spells (``007.png`` -> 7); other names are problems."""
    found: dict[int, Path] = {}
    for image in list_images(image_dir, builder.problems):
        stem = image.name.split(".")[0]
        if not stem.isdigit():
            builder.problem(image, "is not named by a labels.csv id (000.png ... 199.png); rename or remove it")
        elif int(stem) in found:
            builder.problem(image, f"has the same id as {found[int(stem)].name}; keep one file per id")
        else:
            found[int(stem)] = image
    return found


def make_headct(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """HeadCT manifest: one row per PNG, labelled by ``labels.csv`` (``hemorrhage`` 1 abnormal, 0 normal), no masks.

    Args:
        root: The download folder holding ``labels.csv`` and ``head_ct/head_ct/``.
        split: Split name written in the manifest (the set has no official split).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``kaggle``; ``defect_type`` ``hemorrhage`` or ``good``).
    """
    root = require_dir(Path(root).expanduser(), "HeadCT root")
    image_dir = _image_dir(root)
    if not (root / LABELS_CSV).is_file() or image_dir is None:
        raise DataError(
            f"HeadCT root {root} needs {LABELS_CSV} and head_ct/head_ct/ (the Kaggle 'Head CT - hemorrhage' "
            "download); point to the folder holding both"
        )
    builder = ManifestBuilder("headct", root, split, "kaggle")
    labels = _read_labels(builder, root / LABELS_CSV)
    images = _images_by_id(builder, image_dir)
    for ident, (_label, line) in sorted(labels.items()):
        if ident not in images:
            builder.problem(f"{root / LABELS_CSV}:{line}", f"id {ident} has no image {ident:03d}.png in {image_dir}")
    for ident, image in sorted(images.items()):
        if ident not in labels:
            builder.problem(image, f"has no row in {LABELS_CSV} (id {ident}); add its label or remove the image")
            continue
        label = labels[ident][0]
        builder.add(image, class_name=CLASS_NAME, label=label, defect_type="hemorrhage" if label else "good")
    return builder.build(strict)


def _write_headct(out: Path, request: SyntheticRequest) -> None:
    """``labels.csv`` (``id, hemorrhage``, integer ids) + ``head_ct/head_ct/NNN.png`` of mixed sizes and modes."""
    samples = sampler(request, "medical")
    rows = ["id, hemorrhage"]
    count = request.n_abnormal + request.n_normal
    for ident in range(count):
        abnormal = ident < request.n_abnormal  # the download lists the hemorrhage slices first
        image = samples.sample(abnormal)[0]
        if ident % 2:  # most slices are greyscale, some RGB, of several sizes
            image = np.pad(image.mean(axis=2).astype(np.uint8), ((0, 4), (0, 8)), mode="edge")
        save_image(image, out / "head_ct" / "head_ct" / f"{ident:03d}.png")
        rows.append(f"{ident},{int(abnormal)}")
    (out / LABELS_CSV).write_text("\n".join(rows) + "\n", encoding="utf-8")


register_dataset(
    DatasetDescription(
        name="headct",
        title="HeadCT (Kaggle)",
        class_name=CLASS_NAME,
        make=make_headct,
        detectors=(Detector(55, "HeadCT labels.csv + head_ct/head_ct/*.png (Kaggle)", looks_like_headct),),
        layouts={"headct": _write_headct},
    )
)
