"""A generic folder dataset: an images folder, an optional masks folder and an optional normals folder.

With a masks folder every image must have a mask with the same stem (``_mask``, ``_seg``, ``_segmentation``,
``_gt`` allowed at the end of a mask's name) and is abnormal, or normal when its mask is empty (said with a
warning). Without one, images are abnormal when a normals
folder is given and of unknown label otherwise. The folder names a researcher's own data uses are found without
options (:data:`IMAGE_DIRS` / :data:`MASK_DIRS`: ``imgs/`` + ``masks/``, ``image/`` + ``mask/``, ...), and so is
one folder holding each image with its ``<stem>_mask`` file; other names are the ``images=`` / ``masks=`` options
(``--images-dir`` / ``--masks-dir`` on the command line).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.labels import empty_masks_as_normal
from medad.data.manifest import (
    ManifestBuilder,
    add_paired_folders,
    is_ignored,
    is_image_file,
    link_problem,
    list_images,
    normalise_stem,
    pair_by_stem,
    pairing_problems,
    require_dir,
)
from medad.data.synthetic import sampler, save_image, write_pairs
from medad.errors import DataError

IMAGE_DIRS: tuple[str, ...] = ("images", "imgs", "image", "img")
"""Images folder names found without an option, in the order they are tried."""
MASK_DIRS: tuple[str, ...] = ("masks", "mask", "gt", "ground_truth")
"""Masks folder names found without an option, in the order they are tried."""
MASK_SUFFIXES: tuple[str, ...] = ("_mask", "_seg", "_segmentation", "_gt", "-mask")
"""Endings of a mask's file stem dropped before pairing it with its image (``case1_mask.png`` -> ``case1``)."""
OPTIONS_HINT = "name the folders with --images-dir/--masks-dir (Python: load_manifest(..., images=..., masks=...))"


def _first_dir(root: Path, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if (root / name).is_dir()), None)


def _is_mask_name(path: Path) -> bool:
    stem = Path(path).name.split(".")[0].lower()
    return stem.endswith(MASK_SUFFIXES)


def _flat_pairs(root: Path) -> bool:
    """Whether ``root`` directly holds images and ``<stem>_mask`` files that pair with them."""
    if not root.is_dir():
        return False
    files = [p for p in root.iterdir() if p.is_file() and not is_ignored(p) and is_image_file(p)]
    masks = [p for p in files if _is_mask_name(p)]
    images = {normalise_stem(p) for p in files if not _is_mask_name(p)}
    return bool(masks) and any(normalise_stem(m, MASK_SUFFIXES) in images for m in masks)


def looks_like_folder(root: Path) -> bool:
    """Whether ``root`` holds one of :data:`IMAGE_DIRS` (the generic folder layout)."""
    return root.is_dir() and _first_dir(root, IMAGE_DIRS) is not None


def _subfolders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not is_ignored(p))


def _named_dir(root: Path, name: str, what: str) -> Path:
    """A folder named by an option; one that is not there is a DataError naming the folders there and the options."""
    path = root / name
    if not path.is_dir():
        why = link_problem(path) or ("is not a folder" if path.exists() else "does not exist")
        raise DataError(f"{what} folder {path} {why} (folders in {root}: {_subfolders(root)}); {OPTIONS_HINT}")
    return path


def mask_layout(root: Path) -> str | None:
    """How ``root`` pairs images with masks without options (``imgs/ + masks/``, ``<name>_mask files``), or
    ``None``: for the warning when such a folder is scored as plain files (its masks would be scored too)."""
    if not root.is_dir():
        return None
    images, masks = _first_dir(root, IMAGE_DIRS), _first_dir(root, MASK_DIRS)
    if images is not None and masks is not None:
        return f"{images}/ + {masks}/"
    return "<name>_mask files beside the images" if _flat_pairs(root) else None


def _images_dir(root: Path, images: str | None) -> Path:
    """The images folder: the one named, else the first of :data:`IMAGE_DIRS` there, else the root itself when
    it holds ``<stem>_mask`` pairs; a DataError naming the options otherwise."""
    if images is not None:
        return _named_dir(root, images, "images")
    name = _first_dir(root, IMAGE_DIRS)
    if name is not None:
        return root / name
    if _flat_pairs(root):
        return root
    raise DataError(
        f"{root} has no images folder ({', '.join(IMAGE_DIRS)}) and no <name>_mask files beside its images "
        f"(folders there: {_subfolders(root)}); {OPTIONS_HINT}"
    )


def _masks_dir(root: Path, image_dir: Path, masks: str | None) -> Path | None:
    """The masks folder: the one named (it must exist), else the first of :data:`MASK_DIRS`, else the images
    folder itself when its files pair with ``<stem>_mask`` files; ``None`` when there are no masks."""
    if masks is not None:
        return _named_dir(root, masks, "masks")
    name = _first_dir(root, MASK_DIRS)
    if name is not None:
        return root / name
    return image_dir if _flat_pairs(image_dir) else None


def _add_flat_pairs(builder: ManifestBuilder, folder: Path, class_name: str) -> None:
    """Images and their ``<stem>_mask`` files in one folder: every image abnormal with its mask."""
    files = list_images(folder, builder.problems)
    masks = [p for p in files if _is_mask_name(p)]
    images = [p for p in files if not _is_mask_name(p)]
    pairing = pair_by_stem(images, masks, MASK_SUFFIXES)
    builder.problems.extend(pairing_problems(pairing, folder))
    for image in images:
        if image in pairing.pairs:
            builder.add(image, class_name=class_name, label=1, mask_path=pairing.pairs[image])


def make_folder(
    root: str | Path,
    split: str = "test",
    images: str | None = None,
    masks: str | None = None,
    normals: str | None = "normals",
    class_name: str = "object",
    strict: bool = True,
) -> pd.DataFrame:
    """Manifest of a generic folder layout.

    Args:
        root: Dataset root.
        split: Split name written in the manifest.
        images: Images folder, relative to ``root`` (``"."`` for the root itself); default: the first of
            :data:`IMAGE_DIRS` found, else the root when it holds ``<stem>_mask`` pairs.
        masks: Masks folder relative to ``root`` (it must exist); default: the first of :data:`MASK_DIRS` found,
            else ``<stem>_mask`` files beside the images, else none.
        normals: Folder of normal images relative to ``root``; used when it exists.
        class_name: Class word for every row.
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest (variant ``folder``).
    """
    root = require_dir(Path(root).expanduser(), "dataset root")
    image_dir = _images_dir(root, images)
    mask_dir = _masks_dir(root, image_dir, masks)
    normal_dir = root / normals if normals else None
    has_normals = normal_dir is not None and normal_dir.is_dir()
    builder = ManifestBuilder("folder", root, split, "folder")
    if mask_dir is not None and mask_dir.resolve() == image_dir.resolve():
        _add_flat_pairs(builder, image_dir, class_name)
    elif mask_dir is not None:
        add_paired_folders(builder, image_dir, mask_dir, class_name=class_name, mask_suffixes=MASK_SUFFIXES)
    else:
        for image in list_images(image_dir, builder.problems):
            builder.add(image, class_name=class_name, label=1 if has_normals else None)
    if has_normals and normal_dir is not None:
        for image in list_images(normal_dir, builder.problems):
            builder.add(image, class_name=class_name, label=0, defect_type="good")
    return empty_masks_as_normal(builder.build(strict), f"folder {root}")


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
        detectors=(
            Detector(62, f"{'/, '.join(IMAGE_DIRS)}/ (+ {'/, '.join(MASK_DIRS)}/, normals/) folder", looks_like_folder),
            Detector(125, "a folder of images with their <name>_mask files beside them", _flat_pairs),
        ),
        layouts={"folder": _write_folder},
    )
)
