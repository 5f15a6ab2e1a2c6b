"""VisA: the native release with ``split_csv/1cls.csv``, the AnomalyCLIP ``meta.json`` form, and anomalib's
MVTec-like ``visa_pytorch`` conversion.

Native images are upper-case ``.JPG``; masks are PNG whose anomalous pixels are small label values rather than
255, so they are binarised with ``>0`` (what anomalib does with ``mask[mask != 0] = 255``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.manifest import ManifestBuilder, is_image_file, require_dir
from medad.data.metajson import read_meta_json
from medad.data.mvtec import category_dirs, scan_mvtec_like
from medad.errors import DataError

VISA_CLASSES: tuple[str, ...] = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
SPLIT_CSV = Path("split_csv") / "1cls.csv"
_CSV_COLUMNS = ("object", "split", "label", "image", "mask")


def _read_split_csv(
    root: Path, split: str, classes: Sequence[str] | None, strict: bool, csv_path: Path
) -> pd.DataFrame:
    builder = ManifestBuilder("visa", root, split, "native-csv")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{csv_path} lacks columns {missing} (expected {list(_CSV_COLUMNS)}); use the official file"
            )
        for line in reader:
            if line["split"].strip() != split or (classes and line["object"] not in classes):
                continue
            label_text = line["label"].strip().lower()
            if label_text not in ("normal", "anomaly"):
                builder.problem(csv_path, f"row for {line['image']} has label '{line['label']}'; use normal/anomaly")
                continue
            image = root / line["image"].strip()
            mask_text = line["mask"].strip()
            mask = root / mask_text if mask_text else None
            if not image.is_file():
                builder.problem(image, f"is listed in {csv_path.name} but does not exist; restore it")
                continue
            if not is_image_file(image):
                builder.problem(image, "is not an image file; fix the split csv")
                continue
            label = int(label_text == "anomaly")
            if label and mask is None and split == "test":
                builder.problem(image, "is an anomaly without a mask in the split csv; add the mask path")
                continue
            if mask is not None and not mask.is_file():
                builder.problem(mask, f"is the mask of {image} in {csv_path.name} but does not exist; restore it")
                continue
            builder.add(
                image,
                class_name=line["object"].strip(),
                label=label,
                mask_path=mask,
                defect_type="bad" if label else "good",
            )
    return builder.build(strict)


def make_visa(
    root: str | Path, split: str = "test", classes: Sequence[str] | None = None, strict: bool = True
) -> pd.DataFrame:
    """VisA manifest from whichever of its layouts ``root`` holds.

    Detection order: ``split_csv/1cls.csv`` (variant ``native-csv``), ``meta.json`` (``meta-json``), then an
    MVTec-like tree with ``good``/``bad`` folders (``visa-pytorch``).

    Args:
        root: The VisA root.
        split: ``test`` or ``train``.
        classes: Restrict to these categories.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest.
    """
    root = require_dir(Path(root).expanduser(), "VisA root")
    if (root / SPLIT_CSV).is_file():
        return _read_split_csv(root, split, classes, strict, root / SPLIT_CSV)
    if (root / "meta.json").is_file():
        frame = read_meta_json(root, dataset="visa", split=split, strict=strict)
        return frame[frame["class_name"].isin(classes)].reset_index(drop=True) if classes else frame
    if category_dirs(root):
        return scan_mvtec_like(
            root, dataset="visa", split=split, variant="visa-pytorch", classes=classes, strict=strict
        )
    raise DataError(
        f"VisA root {root} has neither {SPLIT_CSV}, meta.json nor <category>/test folders; point to the folder "
        "that holds split_csv/ and the category folders"
    )
