"""MVTec AD (``<category>/{train,test}/<type>/`` + ``<category>/ground_truth/<type>/<stem>_mask.png``).

The walker here is shared by the MVTec-like layouts (MPDD, BTAD, the ZSAD repos' re-packaged medical sets):
each ``test/<type>`` folder other than the normal one is anomalous, and its images are paired with
``ground_truth/<type>`` masks by normalised stem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import (
    ManifestBuilder,
    link_problem,
    list_images,
    pair_by_stem,
    pairing_problems,
    require_dir,
)
from medad.data.synthetic import sampler, write_mvtec_tree
from medad.errors import DataError

MVTEC_CLASSES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)


def category_dirs(root: Path) -> list[Path]:
    """Category folders of an MVTec-like root (folders holding ``test/``); ``root`` itself if it holds one."""
    if (root / "test").is_dir() or (root / "train").is_dir():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and ((p / "test").is_dir() or (p / "train").is_dir()))


def scan_mvtec_like(
    root: str | Path,
    *,
    dataset: str,
    split: str = "test",
    normal_names: Sequence[str] = ("good",),
    mask_suffixes: Sequence[str] = ("_mask",),
    variant: str = "mvtec",
    class_name: Callable[[Path], str] | None = None,
    classes: Sequence[str] | None = None,
    strict: bool = True,
) -> pd.DataFrame:
    """Build a manifest from an MVTec-like layout.

    Args:
        root: Dataset root (holding category folders) or one category folder.
        dataset: Value of the ``dataset`` column.
        split: ``test``, ``train`` or another sub-folder name of each category.
        normal_names: Folder names of normal images (``good``; BTAD ``ok``).
        mask_suffixes: Mask-stem suffixes stripped before pairing.
        variant: Layout variant recorded in the manifest.
        class_name: Maps a category folder to its class word; defaults to the folder name.
        classes: Only these categories (default: all found).
        strict: Raise one DataError listing every problem.

    Returns:
        The manifest.
    """
    root = require_dir(Path(root).expanduser(), f"{dataset} root")
    categories = category_dirs(root)
    if not categories:
        raise DataError(
            f"{dataset} root {root} holds no category folder with a test/ or train/ folder; point to the folder "
            "that contains the categories (e.g. bottle/test/good)"
        )
    if classes:
        wanted = set(classes)
        missing = wanted - {c.name for c in categories}
        if missing:
            raise DataError(f"{dataset} root {root} has no categories {sorted(missing)}; check the class names")
        categories = [c for c in categories if c.name in wanted]
    builder = ManifestBuilder(dataset, root, split, variant)
    normals = {n.lower() for n in normal_names}
    for category in categories:
        name = class_name(category) if class_name else category.name
        split_dir = category / split
        if not split_dir.is_dir():
            builder.problem(split_dir, f"is missing: category '{category.name}' has no '{split}' folder")
            continue
        for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            images = list_images(type_dir, builder.problems)
            if type_dir.name.lower() in normals:
                for image in images:
                    builder.add(image, class_name=name, label=0, defect_type=type_dir.name)
                continue
            mask_dir = category / "ground_truth" / type_dir.name
            masks = list_images(mask_dir, builder.problems) if mask_dir.is_dir() else []
            if not mask_dir.is_dir() and split == "test" and link_problem(mask_dir) is None:  # a link: said below
                builder.problem(mask_dir, f"is missing; anomalous folder {type_dir} needs its masks there")
            pairing = pair_by_stem(images, masks, mask_suffixes)
            builder.problems.extend(pairing_problems(pairing, mask_dir, require_mask=split == "test"))
            for image in images:
                if image in pairing.pairs or split != "test":
                    builder.add(
                        image,
                        class_name=name,
                        label=1,
                        mask_path=pairing.pairs.get(image),
                        defect_type=type_dir.name,
                    )
    return builder.build(strict)


def make_mvtec(
    root: str | Path, split: str = "test", classes: Sequence[str] | None = None, strict: bool = True
) -> pd.DataFrame:
    """MVTec AD manifest (``good`` normals, ``<stem>_mask.png`` masks under ``ground_truth/<defect>``).

    Args:
        root: The ``mvtec_anomaly_detection`` folder (or one category folder).
        split: ``test`` or ``train``.
        classes: Restrict to these categories.
        strict: Raise one DataError listing every problem (unpaired masks/images, non-image files...).

    Returns:
        The manifest (variant ``mvtec``).
    """
    return scan_mvtec_like(root, dataset="mvtec", split=split, classes=classes, strict=strict)


def holds_mvtec_like(root: Path, classes: Sequence[str]) -> bool:
    """Whether ``root`` is an MVTec-like folder (or one category) whose category names are all in ``classes``."""
    names = {c.name for c in category_dirs(root)} if root.is_dir() else set()
    return bool(names) and names <= set(classes)


def _write_mvtec(root: Path, request: SyntheticRequest) -> None:
    classes = request.classes or ("bottle", "grid")
    write_mvtec_tree(root, sampler(request, "industrial"), classes, request.n_normal, request.n_abnormal)


register_dataset(
    DatasetDescription(
        name="mvtec",
        make=make_mvtec,
        splits=("train", "test"),
        detectors=(
            Detector(
                72, "MVTec AD <class>/test/<type> (MVTec AD classes)", lambda r: holds_mvtec_like(r, MVTEC_CLASSES)
            ),
        ),
        in_release=True,
        layouts={"mvtec": _write_mvtec},
    )
)
