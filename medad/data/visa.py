"""VisA: the native release with ``split_csv/1cls.csv``, the AnomalyCLIP ``meta.json`` form, and anomalib's
MVTec-like ``visa_pytorch`` conversion.

Native images are upper-case ``.JPG``; masks are PNG whose anomalous pixels are small label values rather than
255, so they are binarised with ``>0`` (what anomalib does with ``mask[mask != 0] = 255``).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, is_image_file, require_dir
from medad.data.metajson import meta_json_classes, read_meta_json
from medad.data.mvtec import category_dirs, holds_mvtec_like, scan_mvtec_like
from medad.data.synthetic import mask_u8, sampler, save_image
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


def _has_split_csv(root: Path) -> bool:
    return root.is_dir() and (root / SPLIT_CSV).is_file()


def _has_visa_meta_json(root: Path) -> bool:
    classes = meta_json_classes(root) if root.is_dir() else None
    return classes is not None and bool(classes) and classes <= set(VISA_CLASSES)


def _write_visa(out: Path, request: SyntheticRequest, meta: bool) -> None:
    """VisA with ``split_csv/1cls.csv`` (or, ``meta``, AnomalyCLIP's ``meta.json``): every image in ``test``."""
    samples = sampler(request, "industrial")
    rows: list[dict[str, str]] = []
    meta_json: dict[str, dict[str, list[dict[str, object]]]] = {"train": {}, "test": {}}
    for cls in request.classes or ("candle", "pcb1"):
        for i in range(request.n_normal + request.n_abnormal):
            abnormal = i >= request.n_normal
            image, mask = samples.sample(abnormal)
            folder = "Anomaly" if abnormal else "Normal"
            rel = f"{cls}/Data/Images/{folder}/{i:03d}.JPG"
            save_image(image, out / rel)
            mask_rel = ""
            if abnormal:
                mask_rel = f"{cls}/Data/Masks/Anomaly/{i:03d}.png"
                save_image(mask_u8(mask, value=int(samples.rng.integers(1, 9))), out / mask_rel)
            label = "anomaly" if abnormal else "normal"
            rows.append({"object": cls, "split": "test", "label": label, "image": rel, "mask": mask_rel})
            meta_json["test"].setdefault(cls, []).append(
                {
                    "img_path": rel,
                    "mask_path": mask_rel,
                    "cls_name": cls,
                    "specie_name": "bad" if abnormal else "good",
                    "anomaly": int(abnormal),
                }
            )
    if meta:
        (out / "meta.json").write_text(json.dumps(meta_json, indent=2), encoding="utf-8")
        return
    (out / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(out / "split_csv" / "1cls.csv", "w", newline="", encoding="utf-8") as handle:
        table = csv.DictWriter(handle, fieldnames=["object", "split", "label", "image", "mask"])
        table.writeheader()
        table.writerows(rows)


register_dataset(
    DatasetDescription(
        name="visa",
        make=make_visa,
        splits=("train", "test"),
        detectors=(
            Detector(10, "VisA split_csv/1cls.csv", _has_split_csv),
            Detector(
                73, "VisA visa_pytorch <class>/test/<type> (VisA classes)", lambda r: holds_mvtec_like(r, VISA_CLASSES)
            ),
            Detector(80, "AnomalyCLIP meta.json of VisA classes", _has_visa_meta_json),
        ),
        in_release=True,
        reference_word="Data",
        layouts={
            "visa": functools.partial(_write_visa, meta=False),
            "visa-meta": functools.partial(_write_visa, meta=True),
        },
    )
)
