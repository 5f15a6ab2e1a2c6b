"""A generic folder dataset: an images folder, an optional masks folder and an optional normals folder.

With a masks folder every image is abnormal and must have a mask with the same stem (``_mask`` allowed).
Without one, images are abnormal when a normals folder is given and of unknown label otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import ManifestBuilder, add_paired_folders, has_images_folder, list_images, require_dir
from medad.data.synthetic import sampler, save_image, write_pairs


def make_folder(
    root: str | Path,
    split: str = "test",
    images: str = "images",
    masks: str | None = "masks",
    normals: str | None = "normals",
    class_name: str = "object",
    strict: bool = True,
) -> pd.DataFrame:
    """Manifest of a generic folder layout.

    Args:
        root: Dataset root.
        split: Split name written in the manifest.
        images: Images folder, relative to ``root`` (``"."`` for the root itself).
        masks: Masks folder relative to ``root``; used when it exists.
        normals: Folder of normal images relative to ``root``; used when it exists.
        class_name: Class word for every row.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``folder``).
    """
    root = require_dir(Path(root).expanduser(), "dataset root")
    image_dir = require_dir(root / images, "images folder")
    mask_dir = root / masks if masks else None
    normal_dir = root / normals if normals else None
    has_masks = mask_dir is not None and mask_dir.is_dir()
    has_normals = normal_dir is not None and normal_dir.is_dir()
    builder = ManifestBuilder("folder", root, split, "folder")
    if has_masks and mask_dir is not None:
        add_paired_folders(builder, image_dir, mask_dir, class_name=class_name)
    else:
        for image in list_images(image_dir, builder.problems):
            builder.add(image, class_name=class_name, label=1 if has_normals else None)
    if has_normals and normal_dir is not None:
        for image in list_images(normal_dir, builder.problems):
            builder.add(image, class_name=class_name, label=0, defect_type="good")
    return builder.build(strict)


def _write_folder(root: Path, request: SyntheticRequest) -> None:
    """``images/`` + ``masks/`` of abnormal images and ``normals/`` of normal ones."""
    samples = sampler(request, "medical")
    write_pairs(
        root, samples, request.n_abnormal, "images", "masks", lambda i: f"img{i:03d}.png", lambda i: f"img{i:03d}.png"
    )
    for i in range(request.n_normal):
        save_image(samples.sample(False)[0], root / "normals" / f"normal{i:03d}.png")


register_dataset(
    DatasetDescription(
        name="folder",
        make=make_folder,
        detectors=(Detector(62, "images/ (+ masks/, normals/) folder", has_images_folder),),
        layouts={"folder": _write_folder},
    )
)
