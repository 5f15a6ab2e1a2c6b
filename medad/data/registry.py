"""Dispatch by dataset kind, layout auto-detection, file checks and manifests from arbitrary paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medad.data.btad import make_btad
from medad.data.clinicdb import make_clinicdb
from medad.data.colondb import detect_colondb, make_colondb
from medad.data.dicom import looks_like_dicom, make_dicom
from medad.data.folder import make_folder
from medad.data.isic import find_isic_folders, make_isic
from medad.data.manifest import ManifestBuilder, Problem, concat, is_ignored, is_image_file, problems_error
from medad.data.mpdd import MPDD_CLASSES, make_mpdd
from medad.data.mvtec import MVTEC_CLASSES, category_dirs, make_mvtec
from medad.data.mvtec_style import make_mvtec_style
from medad.data.nifti import is_nifti, make_nifti
from medad.data.readers import image_shape, read_image, read_mask
from medad.data.tabular import make_csv
from medad.data.tn3k import make_tn3k
from medad.data.visa import SPLIT_CSV, make_visa
from medad.errors import DataError

MAKERS: dict[str, Callable[..., pd.DataFrame]] = {
    "mvtec": make_mvtec,
    "mpdd": make_mpdd,
    "btad": make_btad,
    "visa": make_visa,
    "isic": make_isic,
    "clinicdb": make_clinicdb,
    "colondb": make_colondb,
    "tn3k": make_tn3k,
    "mvtec_style": make_mvtec_style,
    "folder": make_folder,
    "csv": make_csv,
    "dicom": make_dicom,
    "nifti": make_nifti,
}
KINDS: tuple[str, ...] = (*MAKERS, "auto")


def _mvtec_like_kind(root: Path) -> str | None:
    categories = category_dirs(root)
    if not categories:
        return None
    names = {c.name for c in categories}
    if any((c / "test" / "ok").is_dir() or (c / "train" / "ok").is_dir() for c in categories):
        return "btad"
    if names <= set(MPDD_CLASSES):
        return "mpdd"
    if names <= set(MVTEC_CLASSES):
        return "mvtec"
    return "mvtec_style"


def _detectors() -> list[tuple[str, Callable[[Path], str | None]]]:
    def visa(root: Path) -> str | None:
        return "visa" if root.is_dir() and (root / SPLIT_CSV).is_file() else None

    def meta(root: Path) -> str | None:
        return "visa" if root.is_dir() and (root / "meta.json").is_file() else None

    def isic(root: Path) -> str | None:
        ok = root.is_dir() and any(find_isic_folders(root, s) for s in ("test", "train", "val"))
        return "isic" if ok else None

    def tn3k(root: Path) -> str | None:
        ok = root.is_dir() and ((root / "test-image").is_dir() or (root / "trainval-image").is_dir())
        return "tn3k" if ok else None

    def clinicdb(root: Path) -> str | None:
        return "clinicdb" if root.is_dir() and (root / "Original").is_dir() else None

    def images_masks(root: Path) -> str | None:
        if not (root.is_dir() and (root / "images").is_dir()):
            return None
        name = root.name.lower()
        return "clinicdb" if "clinic" in name else "colondb" if "colon" in name else "folder"

    def mvtec_like(root: Path) -> str | None:
        return _mvtec_like_kind(root) if root.is_dir() else None

    def colondb_bmp(root: Path) -> str | None:
        return "colondb" if root.is_dir() and detect_colondb(root) == "original-bmp" else None

    def single_file(root: Path) -> str | None:
        if not root.is_file():
            return None
        if root.suffix.lower() == ".csv":
            return "csv"
        return "nifti" if is_nifti(root) else "dicom" if looks_like_dicom(root) else None

    def volumes(root: Path) -> str | None:
        if not root.is_dir():
            return None
        files = [p for p in root.iterdir() if p.is_file() and not is_ignored(p)]
        if files and all(is_nifti(p) for p in files):
            return "nifti"
        return "dicom" if files and all(looks_like_dicom(p) for p in files) else None

    return [
        ("VisA split_csv/1cls.csv", visa),
        ("AnomalyCLIP meta.json", meta),
        ("ISIC 2016/2017/2018 folders", isic),
        ("TN3K test-image/ + test-mask/", tn3k),
        ("CVC-ClinicDB Original/ + Ground Truth/", clinicdb),
        ("images/ + masks/ (ClinicDB/ColonDB PNG, folder)", images_masks),
        ("MVTec-like <class>/test/<type> (mvtec, mpdd, btad, mvtec_style)", mvtec_like),
        ("CVC-ColonDB original <N>.bmp + p<N>.bmp", colondb_bmp),
        ("single CSV / NIfTI / DICOM file", single_file),
        ("folder of NIfTI or DICOM files", volumes),
    ]


def detect_kind(root: str | Path) -> str:
    """Detect the dataset kind of ``root``; raise a DataError listing every layout tried on failure."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"dataset root {path} does not exist; check the path")
    tried = []
    for description, detector in _detectors():
        kind = detector(path)
        if kind is not None:
            return kind
        tried.append(description)
    raise DataError(f"{path} is not a known dataset layout (tried: {'; '.join(tried)}); pass --kind explicitly")


def load_manifest(root: str | Path, kind: str = "auto", split: str | None = "test", **options: Any) -> pd.DataFrame:
    """Build the manifest of a dataset in its public layout.

    Args:
        root: Dataset root (or a file for ``csv``/``dicom``/``nifti``).
        kind: One of :data:`KINDS`; ``auto`` detects it.
        split: Split to read (``None`` keeps every row of a CSV manifest).
        **options: Passed to the ``make_<kind>`` function (e.g. ``strict``, ``classes``, ``medical``, ``axis``).

    Returns:
        The manifest DataFrame (columns in :data:`medad.data.manifest.COLUMNS`).

    Raises:
        DataError: Unknown kind, missing/unknown root, or (``strict=True``, the default) any problem.
    """
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind '{kind}'; use one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = detect_kind(root)
    if split is None and kind != "csv":
        split = "test"
    return MAKERS[kind](root, split=split, **options)


def validate_files(manifest: pd.DataFrame, decode: bool = True) -> list[Problem]:
    """Open every image (and mask) of a manifest and report each unreadable file or size mismatch.

    Args:
        manifest: A manifest.
        decode: Decode the full pixel data (catches truncated files); otherwise read headers only.

    Returns:
        One problem per bad file (each image is checked once, even when it has many frames/slices).
    """
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for row in manifest.to_dict("records"):
        key = (row["image_path"], row["mask_path"])
        if row["source_format"] != "image" and key in seen:
            continue
        seen.add(key)
        try:
            if decode:
                read_image(row)
            else:
                image_shape(row)
            if row["mask_path"]:
                read_mask(row)
        except DataError as exc:
            problems.append(Problem(row["mask_path"] or row["image_path"], str(exc)))
    return problems


def check_dataset(root: str | Path, kind: str = "auto", split: str = "test", **options: Any) -> dict[str, Any]:
    """Check a dataset: counts, detected variant and every problem (structure and unreadable files).

    Args:
        root: Dataset root.
        kind: Dataset kind or ``auto``.
        split: Split to check.
        **options: Passed to the ``make_<kind>`` function.

    Returns:
        ``{"kind", "variant", "root", "split", "total", "normal", "abnormal", "unknown", "classes":
        {class: {"total", "normal", "abnormal"}}, "problems": [{"path", "message"}]}``.

    Raises:
        DataError: The root is missing or not a known layout.
    """
    resolved = detect_kind(root) if kind == "auto" else kind
    manifest = load_manifest(root, resolved, split=split, strict=False, **options)
    problems = list(manifest.attrs.get("problems", [])) + validate_files(manifest)
    labels = manifest["label"]
    classes = {
        str(name): {
            "total": len(group),
            "normal": int((group["label"] == 0).sum()),
            "abnormal": int((group["label"] == 1).sum()),
        }
        for name, group in manifest.groupby("class_name", sort=True)
    }
    variants = sorted(set(manifest["variant"])) or [""]
    return {
        "kind": resolved,
        "variant": ",".join(variants),
        "root": str(Path(root).expanduser()),
        "split": split,
        "total": len(manifest),
        "normal": int((labels == 0).sum()),
        "abnormal": int((labels == 1).sum()),
        "unknown": int(labels.isna().sum()),
        "classes": classes,
        "problems": [{"path": p.path, "message": p.message} for p in problems],
    }


def manifest_from_paths(paths: Sequence[str | Path], class_name: str = "object", strict: bool = True) -> pd.DataFrame:
    """Manifest for scoring arbitrary files and folders (images, DICOM, NIfTI); labels are unknown.

    Folders are searched recursively. Each plain image becomes one row, each DICOM frame and NIfTI slice
    (axis 2) one row.

    Args:
        paths: Files or folders.
        class_name: Class word for every row.
        strict: Raise one DataError listing every problem (missing path, non-image file).

    Returns:
        The manifest (dataset ``files``, variant ``paths``).
    """
    frames: list[pd.DataFrame] = []
    images = ManifestBuilder("files", Path("/"), "test", "paths")
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            images.problem(path, "does not exist; check the path")
            continue
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not is_ignored(p))
        for file in files:
            if is_image_file(file):
                images.add(file, class_name=class_name, label=None)
            elif is_nifti(file):
                frames.append(make_nifti(file, class_name=class_name, strict=False))
            elif looks_like_dicom(file):
                frames.append(make_dicom(file, class_name=class_name, strict=False))
            else:
                images.problem(file, "is not an image, DICOM or NIfTI file; remove it from the inputs")
    if images.rows or images.problems or not frames:
        frames.insert(0, images.build(strict=False))
    manifest = concat(frames)
    problems = manifest.attrs["problems"]
    if strict and problems:
        raise problems_error(problems, ", ".join(str(p) for p in paths), "files")
    return manifest
