"""BMAD (DorisBao/BMAD, Bao et al. 2023): six medical sets with normal images, one dataset kind per subset.

Each subset is laid out ``train/good/``, ``valid/{good,Ungood}/`` and ``test/{good,Ungood}/``. The three sets with
masks (Brain MRI from BraTS 2021, Liver CT from BTCV + LiTS, RESC retinal OCT) hold ``img/`` and a mask folder
(``label/`` in the first release, AA-CLIP's file lists and anomalib; ``anomaly_mask/`` in the current README and
MVFA's copies) inside each folder; the three image-level sets (OCT2017, RSNA chest X-ray, Camelyon16) hold the
images directly. What BMAD's own scripts do and this reader copes with:

- ``train/good/`` holds the images directly in the Brain preprocessing script but ``train/good/img/`` in the
  README tree: both are read;
- images and masks are paired by file stem, never by sorted position (anomalib and MVFA zip sorted listings);
- the Brain slices and masks are written by ``matplotlib.pyplot.imsave`` (RGBA, alpha 255): a mask is read from
  its colour channels (alpha ignored), any non-zero colour is lesion, as MVFA, AA-CLIP and anomalib read it;
- OCT2017 images are ``.jpeg`` (anomalib's loader globs ``.png`` only and misses them);
- Camelyon16 patches are numbered per folder, so ``good/1000.png`` and ``Ungood/1000.png`` are different images;
- normal images get no mask (a ``good/label/`` of empty masks, which the Brain script writes, is ignored);
- the file name gives the patient / volume (``00002_60.png``: BraTS case 00002, slice 60; ``CNV-6294785-1``:
  OCT2017 patient 6294785), kept pseudonymised as ``group_id`` so that intervals resample patients.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import binary_erosion

from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.manifest import (
    ManifestBuilder,
    is_ignored,
    list_images,
    pair_by_stem,
    pairing_problems,
    require_dir,
)
from medad.data.readers import LABEL_MAP
from medad.data.synthetic import mask_u8, sampler, save_image
from medad.errors import DataError
from medad.utils.privacy import case_id

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""BMAD's splits, in the order ``load_all_splits`` reads them."""
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
"""Folder names of each split (``val`` is the name the BMAD authors' own configs use for Chest and OCT2017)."""
NORMAL, ABNORMAL = "good", "Ungood"
MASK_FOLDERS: tuple[str, ...] = ("label", "anomaly_mask")
"""Mask folder names beside ``img/``: ``label`` (first release, AA-CLIP, anomalib), ``anomaly_mask`` (README, MVFA)."""
SOURCE_NOTE = "BMAD (DorisBao/BMAD)"


@dataclass(frozen=True)
class Subset:
    """One BMAD subset: its kind, the folder names it is distributed under, its class and how files are named.

    Attributes:
        kind: The dataset kind.
        title: How reports name it (with the source).
        folder: The folder name the synthetic writer uses (BMAD README / anomalib names).
        names: Lower-case folder names recognised as this subset.
        class_name: The ``class_name`` of every row.
        clean_word: The prompt word in ``clean`` mode (MVFA's ``REAL_NAME``).
        masks: Whether the subset has pixel masks.
        stem: A pattern that only this subset's file stems match (``auto`` uses it when the folder was renamed);
            ``None`` when another subset's names look the same (Liver CT and RESC are both ``N_N``).
        group: Pattern whose first group is the patient / volume in a file stem.
        defect: Pattern whose first group is the finding in an abnormal file stem (OCT2017, chest X-ray).
        extension: Image extension of the synthetic copy.
        order: Detector order.
        label_map: The masks are label maps (several lesion levels): read with ``mask_rule`` ``label-map``.
    """

    kind: str
    title: str
    folder: str
    names: frozenset[str]
    class_name: str
    clean_word: str
    masks: bool
    stem: re.Pattern[str] | None
    group: re.Pattern[str] | None
    defect: re.Pattern[str] | None
    extension: str
    order: int
    label_map: bool = False


SUBSETS: tuple[Subset, ...] = (
    Subset(
        "bmad_brainmri",
        "Brain MRI (BMAD, BraTS 2021)",
        "Brain",
        frozenset({"brain", "brain_ad", "brats2021", "bras2021"}),
        "brain",
        "brain",
        True,
        re.compile(r"^\d{5}_\d+$"),
        re.compile(r"^(\d{5})_\d+$"),
        None,
        ".png",
        63,
        label_map=True,
    ),
    Subset(
        "bmad_liverct",
        "Liver CT (BMAD, BTCV + LiTS)",
        "Liver",
        frozenset({"liver", "liver_ad"}),
        "liver",
        "liver",
        True,
        None,
        re.compile(r"^(\d+)_\d+$"),
        None,
        ".png",
        64,
    ),
    Subset(
        "bmad_resc",
        "RESC retinal OCT (BMAD)",
        "RESC",
        frozenset({"resc", "retina_resc", "retina_resc_ad"}),
        "retina",
        "retinal OCT",
        True,
        None,
        re.compile(r"^(\d+)_\d+$"),
        None,
        ".png",
        65,
    ),
    Subset(
        "bmad_oct2017",
        "OCT2017 retinal OCT (BMAD)",
        "OCT2017",
        frozenset({"oct2017", "oct17", "retina_oct2017", "retina_oct2017_ad"}),
        "retina",
        "retinal OCT",
        False,
        re.compile(r"^(NORMAL|CNV|DME|DRUSEN)-\d+-\d+$"),
        re.compile(r"^[A-Z]+-(\d+)-\d+$"),
        re.compile(r"^([A-Z]+)-\d+-\d+$"),
        ".jpeg",
        66,
    ),
    Subset(
        "bmad_chestxray",
        "Chest X-ray (BMAD, RSNA)",
        "Chest",
        frozenset({"chest", "chest_ad", "chest-rsna", "chest_rsna", "rsna"}),
        "chest",
        "chest X-ray film",
        False,
        re.compile(r"^(Normal-|Lung_Opacity_|No-Not-Normal_)"),
        None,
        re.compile(r"^(Lung_Opacity|No-Not-Normal)_"),
        ".png",
        67,
    ),
    Subset(
        "bmad_histopathology",
        "Histopathology (BMAD, Camelyon16)",
        "camelyon16",
        frozenset({"histopathology", "histopathology_ad", "camelyon16", "camelyon16_256", "camelyon", "his"}),
        "histopathology",
        "histopathological image",
        False,
        re.compile(r"^\d+$"),
        None,
        None,
        ".png",
        68,
    ),
)
BY_KIND: dict[str, Subset] = {subset.kind: subset for subset in SUBSETS}


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` named ``name`` (case-insensitive), or ``None``."""
    if not folder.is_dir():
        return None
    exact = folder / name
    if exact.is_dir():
        return exact
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)


def _split_dir(root: Path, split: str) -> Path | None:
    return next((d for name in SPLIT_FOLDERS[split] if (d := _child(root, name)) is not None), None)


def is_bmad_root(folder: Path) -> bool:
    """Whether ``folder`` holds a BMAD subset: a ``test/`` or ``valid/`` folder with BMAD's ``Ungood/`` in it."""
    return any((folder / split / ABNORMAL).is_dir() for split in ("test", "valid", "val"))


def _sample_stems(folder: Path, limit: int = 20) -> list[str]:
    """Up to ``limit`` image stems of a BMAD subset's abnormal test (or valid) images, for recognising it."""
    for split in ("test", "valid", "val"):
        ungood = folder / split / ABNORMAL
        images = ungood / "img" if (ungood / "img").is_dir() else ungood
        if images.is_dir():
            files = sorted(p for p in images.iterdir() if p.is_file() and not is_ignored(p))
            return [p.name.split(".")[0] for p in files[:limit]]
    return []


def subset_of(folder: Path) -> Subset | None:
    """Which BMAD subset ``folder`` holds: by its folder name, else by its file names; ``None`` if neither says."""
    if not is_bmad_root(folder):
        return None
    name = folder.name.lower()
    named = next((s for s in SUBSETS if name in s.names), None)
    if named is not None:
        return named
    stems = _sample_stems(folder)
    has_masks = any(_child(folder / split / ABNORMAL, "img") for split in ("test", "valid", "val"))
    for subset in SUBSETS:
        pattern = subset.stem
        if pattern is not None and subset.masks == has_masks and stems and all(pattern.match(s) for s in stems):
            return subset
    return None


def find_subset(root: Path, subset: Subset) -> Path | None:
    """The folder of ``subset`` under ``root``: ``root`` itself, or one sub-folder named as the subset."""
    if not root.is_dir():
        return None
    if is_bmad_root(root):
        return root
    named = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in subset.names and is_bmad_root(p)]
    return named[0] if named else None


def _detects(subset: Subset, root: Path) -> bool:
    """``auto``: ``root`` is this subset, or holds exactly one BMAD subset and it is this one.

    Raises:
        DataError: ``root`` holds several BMAD subsets: which one to read is the user's choice, not a guess.
    """
    if not root.is_dir():
        return False
    if is_bmad_root(root):
        return subset_of(root) == subset
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and is_bmad_root(p)]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(
            f"{root} holds several BMAD subsets ({names}); point to one of them, or pass --kind with one of "
            f"{', '.join(s.kind for s in SUBSETS)}"
        )
    return len(found) == 1 and subset_of(found[0]) == subset


def _group(subset: Subset, image: Path) -> str | None:
    """The pseudonymised patient / volume of an image from its file name, or ``None`` (the image is its group)."""
    match = subset.group.match(image.name.split(".")[0]) if subset.group else None
    return case_id(f"{subset.kind}/group/{match.group(1)}") if match else None


def _defect(subset: Subset, image: Path, label: int) -> str:
    """The defect type: ``good``, or the finding the file name gives (``CNV``, ``Lung_Opacity``), else ``Ungood``."""
    if label == 0:
        return NORMAL
    match = subset.defect.match(image.name.split(".")[0]) if subset.defect else None
    return match.group(1) if match else ABNORMAL


def _image_folder(type_dir: Path) -> Path:
    """Where a ``good`` / ``Ungood`` folder's images are: its ``img/`` when there, else the folder itself."""
    return _child(type_dir, "img") or type_dir


def _mask_folder(type_dir: Path) -> Path | None:
    return next((d for name in MASK_FOLDERS if (d := _child(type_dir, name)) is not None), None)


def _add_type(builder: ManifestBuilder, subset: Subset, type_dir: Path, label: int) -> None:
    """Add the images of one ``good`` / ``Ungood`` folder; abnormal ones of a set with masks get theirs by stem."""
    images = list_images(_image_folder(type_dir), builder.problems)
    masks: dict[Path, Path] = {}
    if subset.masks and label == 1:
        mask_dir = _mask_folder(type_dir)
        if mask_dir is None:
            folders = " or ".join(f"{name}/" for name in MASK_FOLDERS)
            builder.problem(type_dir, f"has no mask folder ({folders}) beside img/; restore it")
            return
        pairing = pair_by_stem(images, list_images(mask_dir, builder.problems), ())
        builder.problems.extend(pairing_problems(pairing, mask_dir))
        masks = pairing.pairs
        images = [image for image in images if image in masks]
    for image in images:
        builder.add(
            image,
            class_name=subset.class_name,
            label=label,
            mask_path=masks.get(image),
            defect_type=_defect(subset, image, label),
            group_id=_group(subset, image),
        )


def _add_split(builder: ManifestBuilder, subset: Subset, split_dir: Path, split: str) -> None:
    """Add ``good`` (label 0) and ``Ungood`` (label 1) of a split; valid and test need both, train only good."""
    known = {NORMAL.lower(), ABNORMAL.lower()}
    for entry in sorted(p for p in split_dir.iterdir() if p.is_dir() and not is_ignored(p)):
        if entry.name.lower() not in known:
            builder.problem(entry, f"is not a BMAD folder (a split holds {NORMAL}/ and {ABNORMAL}/); move it out")
    for name, label in ((NORMAL, 0), (ABNORMAL, 1)):
        type_dir = _child(split_dir, name)
        if type_dir is not None:
            _add_type(builder, subset, type_dir, label)
        elif split != "train" or label == 0:
            builder.problem(split_dir / name, f"is missing: BMAD's {split} split holds {NORMAL}/ and {ABNORMAL}/")


def make_bmad(root: str | Path, split: str = "test", strict: bool = True, *, kind: str) -> pd.DataFrame:
    """Manifest of one BMAD subset.

    Args:
        root: The subset folder (holding ``train/``, ``valid/``, ``test/``) or a folder holding it under one of
            its names (``Brain``, ``Brain_AD``, ``Liver``, ``RESC``, ``OCT2017``, ``Chest``, ``camelyon16``, ...).
        split: ``train`` (normal images only), ``valid`` (``val`` is read as ``valid``) or ``test``.
        strict: Raise one DataError listing every problem.
        kind: The subset's dataset kind (bound by each registration).

    Returns:
        The manifest (variant ``bmad``): ``good`` images label 0 without mask, ``Ungood`` images label 1 with their
        mask where the subset has masks.
    """
    subset = BY_KIND[kind]
    root = require_dir(Path(root).expanduser(), f"{subset.title} root")
    split = "valid" if split == "val" else split
    if split not in SPLITS:
        raise DataError(f"BMAD has splits {', '.join(SPLITS)}, not '{split}'")
    base = find_subset(root, subset)
    other = subset_of(base) if base is not None else None
    if other is not None and other != subset:
        raise DataError(
            f"{base} holds {other.title}, not {subset.title}; pass --kind {other.kind} (or point to the "
            f"{subset.folder} folder)"
        )
    if base is None:
        raise DataError(
            f"{subset.title} root {root} holds no BMAD test/ or valid/ folder with {ABNORMAL}/, nor a sub-folder "
            f"named {subset.folder} that does; point to the subset folder (the one holding train/, valid/, test/)"
        )
    builder = ManifestBuilder(kind, base, split, "bmad")
    split_dir = _split_dir(base, split)
    if split_dir is None:
        builder.problem(base / split, f"is missing: the {split} split of {subset.title} is not there")
        return builder.build(strict)
    _add_split(builder, subset, split_dir, split)
    manifest = builder.build(strict)
    if subset.label_map:
        manifest.loc[manifest["mask_path"] != "", "mask_rule"] = LABEL_MAP
    return manifest


def _grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2).astype(np.uint8)


def _bone_rgba(grey: np.ndarray) -> np.ndarray:
    """What ``plt.imsave(..., cmap="bone")`` writes for a slice: RGBA, blue-tinted grey, alpha 255."""
    level = grey.astype(np.float32) / 255.0
    rgb = np.stack([level * 0.87, level * 0.93, np.minimum(1.0, level * 1.07)], axis=2)
    alpha = np.ones((*grey.shape, 1), dtype=np.float32)
    return (np.concatenate([rgb, alpha], axis=2) * 255).astype(np.uint8)


def _as_stored(subset: Subset, image: np.ndarray) -> np.ndarray:
    """A synthetic RGB image in the colour form the subset's files have."""
    if subset.kind == "bmad_brainmri":
        return _bone_rgba(_grey(image))
    return image if subset.kind == "bmad_histopathology" else _grey(image)


def _label_map(mask: np.ndarray) -> np.ndarray:
    """A lesion as a BraTS-style label map scaled to 0-255: the core at 255, the rim around it at 127."""
    core = binary_erosion(mask, iterations=2)
    return np.where(core, 255, np.where(mask, 127, 0)).astype(np.uint8)


def _mask_as_stored(subset: Subset, mask: np.ndarray) -> np.ndarray:
    """A synthetic mask as the subset stores it: Brain the label map through ``plt.imsave`` (RGBA, alpha 255, one
    grey level per tumour sub-region), the others 0/255."""
    return _bone_rgba(_label_map(mask)) if subset.label_map else mask_u8(mask)


def _names(subset: Subset, label: int, count: int, start: int) -> list[str]:
    """File stems in the subset's naming (patients / volumes repeat across slices, as in the release)."""
    if subset.kind == "bmad_oct2017":
        findings = ("CNV", "DME", "DRUSEN")
        return [f"{'NORMAL' if label == 0 else findings[i % 3]}-{5000000 + i // 2}-{i % 2 + 1}" for i in range(count)]
    if subset.kind == "bmad_chestxray":
        prefixes = ("Lung_Opacity_", "No-Not-Normal_")
        ids = [f"{start + i:08x}-0000-4000-8000-{i:012x}" for i in range(count)]
        return [f"Normal-{uid}" if label == 0 else f"{prefixes[i % 2]}{uid}" for i, uid in enumerate(ids)]
    if subset.kind == "bmad_histopathology":
        return [str(1000 + i) for i in range(count)]  # numbered per folder: good/1000 and Ungood/1000 both exist
    if subset.kind == "bmad_brainmri":
        return [f"{start + i // 2:05d}_{60 + 4 * (i % 2)}" for i in range(count)]
    return [f"{start + i // 2}_{300 + i % 2}" for i in range(count)]


def _write_type(
    out: Path, subset: Subset, samples: Callable[[bool], tuple[np.ndarray, np.ndarray]], spec: tuple[str, str, int, int]
) -> None:
    """Write one ``<split>/<good|Ungood>`` folder of ``count`` images (and masks) in the subset's form."""
    split, type_name, count, start = spec
    label = int(type_name == ABNORMAL)
    type_dir = out / split / type_name
    nested = subset.masks and not (subset.kind == "bmad_brainmri" and split == "train")  # script: train/good flat
    mask_dir = type_dir / ("anomaly_mask" if subset.kind == "bmad_brainmri" else "label")
    for stem in _names(subset, label, count, start):
        image, mask = samples(bool(label))
        save_image(_as_stored(subset, image), (type_dir / "img" if nested else type_dir) / f"{stem}{subset.extension}")
        if subset.masks and split != "train" and (label or subset.kind == "bmad_brainmri"):
            save_image(_mask_as_stored(subset, mask), mask_dir / f"{stem}.png")  # Brain: empty masks of normals too


def _write_bmad(subset: Subset, out: Path, request: SyntheticRequest) -> None:
    """``<Folder>/{train/good, valid/{good,Ungood}, test/{good,Ungood}}`` in the subset's form and naming."""
    draw = sampler(request, "medical").sample
    base = out / subset.folder
    n_valid_normal, n_valid_abnormal = min(1, request.n_normal), min(1, request.n_abnormal)
    specs = (
        ("train", NORMAL, request.n_normal, 1),
        ("valid", NORMAL, n_valid_normal, 200),
        ("valid", ABNORMAL, n_valid_abnormal, 300),
        ("test", NORMAL, request.n_normal, 400),
        ("test", ABNORMAL, request.n_abnormal, 500),
    )
    for spec in specs:
        _write_type(base, subset, draw, spec)


def _maker(kind: str) -> Callable[..., pd.DataFrame]:
    """The reader of one subset, with the options ``load_manifest`` accepts for it (``split``, ``strict``)."""

    def make(root: str | Path, split: str = "test", strict: bool = True) -> pd.DataFrame:
        return make_bmad(root, split, strict, kind=kind)

    make.__doc__ = f"Manifest of {BY_KIND[kind].title}; see :func:`make_bmad`."
    return make


for _subset in SUBSETS:
    register_dataset(
        DatasetDescription(
            name=_subset.kind,
            title=_subset.title,
            class_name=_subset.class_name,
            make=_maker(_subset.kind),
            splits=SPLITS,
            detectors=(
                Detector(
                    _subset.order,
                    f"BMAD {_subset.folder}/{{train,valid,test}}/{{good,Ungood}} ({_subset.kind})",
                    partial(_detects, _subset),
                ),
            ),
            clean_words={_subset.class_name: _subset.clean_word} if _subset.clean_word != _subset.class_name else {},
            layouts={_subset.kind.replace("_", "-"): partial(_write_bmad, _subset)},
        )
    )
