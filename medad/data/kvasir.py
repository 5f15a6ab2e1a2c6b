"""Kvasir-SEG colonoscopy polyps: ``Kvasir-SEG/{images,masks}/<id>.jpg`` (+ ``kavsir_bboxes.json``, ignored).

Every image shows a polyp (label 1, class ``polyp``). Image and mask share the file name; the masks are JPEG, so
they are binarised with ``>127`` (JPEG ringing would make ``>0`` grow the polyp). PraNet's
``TestDataset/Kvasir`` copy (``images/`` + ``masks/`` as PNG) is read too, with the ``>0`` rule of PNG masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, add_paired_folders, require_dir
from medad.data.synthetic import mask_u8, sampler, save_image
from medad.errors import DataError

CLASS_NAME = "polyp"
"""The ``class_name`` of every row (used in place of folder names)."""

KVASIR_FOLDER = "Kvasir-SEG"
BBOXES_JSON = "kavsir_bboxes.json"


def find_kvasir(root: Path) -> Path | None:
    """The folder holding Kvasir's ``images/`` + ``masks/`` (``root`` or ``root/Kvasir-SEG``), or ``None``.

    ``root`` itself counts when it holds ``images/`` and either ``kavsir_bboxes.json`` or "kvasir" in its name.
    """
    if not root.is_dir():
        return None
    if (root / KVASIR_FOLDER / "images").is_dir():
        return root / KVASIR_FOLDER
    if (root / "images").is_dir() and ((root / BBOXES_JSON).is_file() or "kvasir" in root.name.lower()):
        return root
    return None


def make_kvasir(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
    """Kvasir-SEG manifest (all images are polyps: label 1, class ``polyp``).

    Args:
        root: The ``Kvasir-SEG`` folder (holding ``images/`` + ``masks/``) or the folder that holds it.
        split: Split name written in the manifest (the set has no official split).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``kvasir-seg``, or ``pranet`` for PraNet's PNG copy).
    """
    root = require_dir(Path(root).expanduser(), "Kvasir-SEG root")
    base = find_kvasir(root)
    if base is None:
        raise DataError(
            f"Kvasir-SEG root {root} has neither '{KVASIR_FOLDER}/images/' nor 'images/' with '{BBOXES_JSON}'; "
            "point to the Kvasir-SEG folder (the one holding images/ and masks/)"
        )
    image_dir = base / "images"
    variant = "pranet" if any(image_dir.glob("*.png")) else "kvasir-seg"
    builder = ManifestBuilder("kvasir", base, split, variant)
    add_paired_folders(builder, image_dir, base / "masks", class_name=CLASS_NAME)
    return builder.build(strict)


def _write_kvasir(out: Path, request: SyntheticRequest) -> None:
    """``Kvasir-SEG/{images,masks}/<id>.jpg`` (JPEG masks) and a ``kavsir_bboxes.json`` of the lesion boxes."""
    samples = sampler(request, "medical")
    base = out / KVASIR_FOLDER
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    boxes: dict[str, object] = {}
    for _ in range(request.n_abnormal):
        name = "c" + "".join(samples.rng.choice(alphabet, 24))
        image, mask = samples.sample(True)
        save_image(image, base / "images" / f"{name}.jpg")
        save_image(mask_u8(mask), base / "masks" / f"{name}.jpg")
        rows, cols = np.nonzero(mask)
        box = {"label": "polyp", "xmin": int(cols.min()), "ymin": int(rows.min())}
        box |= {"xmax": int(cols.max()), "ymax": int(rows.max())}
        boxes[name] = {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "bbox": [box]}
    (base / BBOXES_JSON).write_text(json.dumps(boxes, indent=2), encoding="utf-8")


register_dataset(
    DatasetDescription(
        name="kvasir",
        class_name=CLASS_NAME,
        make=make_kvasir,
        detectors=(Detector(50, "Kvasir-SEG/images + masks", lambda r: find_kvasir(r) is not None),),
        layouts={"kvasir": _write_kvasir},
    )
)
