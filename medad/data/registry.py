"""Dispatch by dataset kind, layout auto-detection, file checks and manifests from arbitrary paths."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from medad.data.btad import make_btad
from medad.data.clinicdb import make_clinicdb
from medad.data.colondb import detect_colondb, make_colondb
from medad.data.dicom import looks_like_dicom, make_dicom
from medad.data.folder import make_folder
from medad.data.hashing import add_sha256
from medad.data.isic import find_anomalyclip_skin, find_isic_folders, make_isic
from medad.data.jsonl import find_jsonl, make_jsonl
from medad.data.kvasir import find_kvasir, make_kvasir
from medad.data.manifest import (
    NO_IMAGES,
    ManifestBuilder,
    Problem,
    concat,
    is_ignored,
    is_image_file,
    problems_error,
)
from medad.data.metajson import make_meta_json, meta_json_classes
from medad.data.mpdd import MPDD_CLASSES, make_mpdd
from medad.data.mvtec import MVTEC_CLASSES, category_dirs, make_mvtec
from medad.data.mvtec_style import make_mvtec_style
from medad.data.nifti import is_nifti, make_nifti
from medad.data.readers import image_shape, read_image, read_mask
from medad.data.tabular import make_csv
from medad.data.tn3k import make_tn3k
from medad.data.visa import SPLIT_CSV, VISA_CLASSES, make_visa
from medad.errors import DataError, DataWarning

T = TypeVar("T")


def make_files(root: str | Path, split: str = "test", strict: bool = True, class_name: str = "object") -> pd.DataFrame:
    """Manifest of a plain folder (or file) of images, DICOM and NIfTI files, read as ``medad score`` reads it.

    Labels are unknown and there are no masks; ``split`` is accepted for the common interface and ignored.
    """
    return manifest_from_paths([root], class_name=class_name, strict=strict)


MAKERS: dict[str, Callable[..., pd.DataFrame]] = {
    "mvtec": make_mvtec,
    "mpdd": make_mpdd,
    "btad": make_btad,
    "visa": make_visa,
    "isic": make_isic,
    "clinicdb": make_clinicdb,
    "colondb": make_colondb,
    "tn3k": make_tn3k,
    "kvasir": make_kvasir,
    "mvtec_style": make_mvtec_style,
    "folder": make_folder,
    "csv": make_csv,
    "jsonl": make_jsonl,
    "meta_json": make_meta_json,
    "dicom": make_dicom,
    "nifti": make_nifti,
    "files": make_files,
}
KINDS: tuple[str, ...] = (*MAKERS, "auto")
SPLITS: dict[str, tuple[str, ...]] = {
    "mvtec": ("train", "test"),
    "mpdd": ("train", "test"),
    "btad": ("train", "test"),
    "visa": ("train", "test"),
    "isic": ("train", "val", "test"),
    "tn3k": ("trainval", "test"),
    "mvtec_style": ("train", "test"),
    "meta_json": ("train", "test"),
}
"""The splits a kind's layout can hold on disk (:func:`load_all_splits`); other kinds hold one set, ``test``."""
_FILE_KINDS = frozenset({"csv", "jsonl"})

REFERENCE_CLASS_WORDS: dict[str, str | None] = {
    "mvtec": None,
    "mpdd": None,
    "btad": None,
    "visa": "Data",
    "isic": "01",
    "clinicdb": "01",
    "colondb": "01",
    "tn3k": "Medical_Dataset",
}
"""The class word of the released AD-DINOv3 code per dataset kind (``compat: reference``).

The release takes the 4th-last component of each image path, and its loaders only read its own layouts, so the
words are fixed per dataset whatever a user's folders are called: ``None`` means the class folder name (MVTec AD,
MPDD, BTAD's ``01``/``02``/``03``), a string is the one word of every class of the dataset.
"""

CLEAN_CLASS_WORDS: dict[str, dict[str, str]] = {
    "btad": {"01": "product", "02": "product", "03": "product"},
}
"""``clean``-mode words per dataset kind and class name where the class name is no word (BTAD's products are
numbered); other classes use their class name (see ``medad.models.prompt_word``); protocols override per class."""


def reference_class_word(dataset: str, class_name: str) -> str | None:
    """The released code's class word of a class of dataset kind ``dataset``; ``None`` outside its eight sets."""
    if dataset not in REFERENCE_CLASS_WORDS:
        return None
    return REFERENCE_CLASS_WORDS[dataset] or class_name


def clean_class_word(dataset: str, class_name: str) -> str | None:
    """medad's ``clean`` word for a class whose name is no word (e.g. BTAD ``01``); ``None`` for the others."""
    return CLEAN_CLASS_WORDS.get(dataset, {}).get(class_name)


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
    if names <= set(VISA_CLASSES):
        return "visa"
    return "mvtec_style"


def _detectors() -> list[tuple[str, Callable[[Path], str | None]]]:
    def visa(root: Path) -> str | None:
        return "visa" if root.is_dir() and (root / SPLIT_CSV).is_file() else None

    def meta(root: Path) -> str | None:
        classes = meta_json_classes(root) if root.is_dir() else None
        if classes is None:
            return None
        return "visa" if classes and classes <= set(VISA_CLASSES) else "meta_json"

    def isic(root: Path) -> str | None:
        splits = ("test", "train", "val")
        ok = root.is_dir() and any(find_isic_folders(root, s) or find_anomalyclip_skin(root, s) for s in splits)
        return "isic" if ok else None

    def tn3k(root: Path) -> str | None:
        ok = root.is_dir() and ((root / "test-image").is_dir() or (root / "trainval-image").is_dir())
        return "tn3k" if ok else None

    def clinicdb(root: Path) -> str | None:
        return "clinicdb" if root.is_dir() and (root / "Original").is_dir() else None

    def kvasir(root: Path) -> str | None:
        return "kvasir" if find_kvasir(root) is not None else None

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
        if root.suffix.lower() in (".csv", ".jsonl"):
            return root.suffix.lower()[1:]
        return "nifti" if is_nifti(root) else "dicom" if looks_like_dicom(root) else None

    def jsonl_folder(root: Path) -> str | None:
        if not root.is_dir():
            return None
        try:
            find_jsonl(root)
        except DataError:
            return None
        return "jsonl"

    def volumes(root: Path) -> str | None:
        if not root.is_dir():
            return None
        files = [p for p in root.iterdir() if p.is_file() and not is_ignored(p)]
        if files and all(is_nifti(p) for p in files):
            return "nifti"
        return "dicom" if files and all(looks_like_dicom(p) for p in files) else None

    def plain_files(root: Path) -> str | None:
        found = root.is_dir() and any(
            is_image_file(p) or is_nifti(p) or looks_like_dicom(p)
            for p in root.rglob("*")
            if p.is_file() and not is_ignored(p)
        )
        return "files" if found else None

    return [
        ("VisA split_csv/1cls.csv", visa),
        ("ISIC 2016/2017/2018 folders or AnomalyCLIP skin/test + ISBI2016 ground truth", isic),
        ("TN3K test-image/ + test-mask/", tn3k),
        ("CVC-ClinicDB Original/ + Ground Truth/", clinicdb),
        ("Kvasir-SEG/images + masks", kvasir),
        ("images/ + masks/ (ClinicDB/ColonDB PNG, folder)", images_masks),
        ("MVTec-like <class>/test/<type> (mvtec, mpdd, btad, visa_pytorch, mvtec_style)", mvtec_like),
        ("AnomalyCLIP meta.json (VisA or any other set)", meta),
        ("CVC-ColonDB original <N>.bmp + p<N>.bmp", colondb_bmp),
        ("single CSV / jsonl / NIfTI / DICOM file", single_file),
        ("folder with one .jsonl file", jsonl_folder),
        ("folder of NIfTI or DICOM files", volumes),
        ("plain folder of images, DICOM or NIfTI files (read as `medad score` reads it; labels unknown)", plain_files),
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


def _check_options(kind: str, options: dict[str, Any]) -> None:
    accepted = list(inspect.signature(MAKERS[kind]).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"option(s) {unknown} do not apply to dataset kind '{kind}'; it accepts {accepted}")


def load_manifest(root: str | Path, /, kind: str = "auto", split: str | None = "test", **options: Any) -> pd.DataFrame:
    """Build the manifest of a dataset in its public layout.

    Args:
        root: Dataset root (or a file for ``csv``/``jsonl``/``dicom``/``nifti``).
        kind: One of :data:`KINDS`; ``auto`` detects it.
        split: Split to read (``None`` keeps every row of a CSV or jsonl manifest).
        **options: Passed to the ``make_<kind>`` function (e.g. ``strict``, ``classes``, ``medical``, ``axis``,
            jsonl's ``root``).

    Returns:
        The manifest DataFrame (columns in :data:`medad.data.manifest.COLUMNS`).

    Raises:
        DataError: Unknown kind or option, missing/unknown root, or (``strict=True``, the default) any problem.
    """
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind '{kind}'; use one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = detect_kind(root)
    _check_options(kind, options)
    if split is None and kind not in _FILE_KINDS:
        split = "test"
    return MAKERS[kind](root, split=split, **options)


def load_all_splits(root: str | Path, /, kind: str = "auto", **options: Any) -> pd.DataFrame:
    """One manifest with every split the layout holds (:data:`SPLITS`; CSV and jsonl: all their rows).

    A split the layout does not hold (no folder, no rows) is skipped; a split that is there but has problems
    raises them (``strict=True``) or keeps them in ``attrs["problems"]``.

    Args:
        root: Dataset root (or a file for ``csv``/``jsonl``/``dicom``/``nifti``).
        kind: One of :data:`KINDS`; ``auto`` detects it.
        **options: Passed to the ``make_<kind>`` function.

    Returns:
        The manifest, rows of each split in the order of :data:`SPLITS`.

    Raises:
        DataError: Unknown kind or option, or no split holds any image, or (strict) any problem.
    """
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind '{kind}'; use one of {', '.join(KINDS)}")
    resolved = detect_kind(root) if kind == "auto" else kind
    if resolved in _FILE_KINDS:
        return load_manifest(root, resolved, split=None, **options)
    _check_options(resolved, options)
    strict = bool(options.pop("strict", True))
    frames: list[pd.DataFrame] = []
    first_error: DataError | None = None
    for split in SPLITS.get(resolved, ("test",)):
        try:
            frame = MAKERS[resolved](root, split=split, strict=False, **options)
        except DataError as exc:
            first_error = first_error or exc
            continue
        problems = frame.attrs.get("problems", [])
        if frame.empty and all(p.message.startswith(NO_IMAGES) for p in problems):
            continue
        if strict and problems:
            raise problems_error(problems, root, resolved)
        frames.append(frame)
    if not frames:
        if first_error is not None:
            raise first_error
        splits = ", ".join(SPLITS.get(resolved, ("test",)))
        raise DataError(f"dataset {root} ({resolved}) holds no images in any split ({splits}); check the path")
    return concat(frames)


def _with_warnings_as_problems(path: str, action: Callable[[], T]) -> tuple[T, list[Problem]]:
    """Run ``action``; every :class:`DataWarning` it raises (a repair such as NaN voxels or a file left out)
    becomes a ``warning:`` problem of ``path``, so a check lists it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = action()
    return result, [Problem(path, f"warning: {w.message}") for w in caught if issubclass(w.category, DataWarning)]


def _read(row: dict[str, Any], decode: bool) -> None:
    """Read a row's image (fully, or its header only) and its mask, raising on a bad file."""
    if decode:
        read_image(row)
    else:
        image_shape(row)
    if row["mask_path"]:
        read_mask(row)


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
            where = row["mask_path"] or row["image_path"]
            problems += _with_warnings_as_problems(where, functools.partial(_read, row, decode))[1]
        except DataError as exc:
            problems.append(Problem(row["mask_path"] or row["image_path"], str(exc)))
    return problems


def check_dataset(
    root: str | Path, /, kind: str = "auto", split: str = "test", sha256: bool = False, **options: Any
) -> dict[str, Any]:
    """Check a dataset: counts, detected variant and every problem (structure and unreadable files).

    Args:
        root: Dataset root.
        kind: Dataset kind or ``auto``.
        split: Split to check.
        sha256: Also hash every image and mask file (the report's ``files``).
        **options: Passed to the ``make_<kind>`` function.

    Returns:
        ``{"kind", "variant", "root", "split", "total", "normal", "abnormal", "unknown", "classes":
        {class: {"total", "normal", "abnormal"}}, "problems": [{"path", "message"}]}``; with ``sha256`` also
        ``"files": [{"image_path", "sha256", "mask_path", "mask_sha256"}]``, one per distinct image/mask pair.

    Raises:
        DataError: The root is missing or not a known layout, or (``sha256``) a file cannot be read.
    """
    resolved = detect_kind(root) if kind == "auto" else kind
    manifest, left_out = _with_warnings_as_problems(
        str(root), lambda: load_manifest(root, resolved, split=split, strict=False, **options)
    )
    problems = list(manifest.attrs.get("problems", [])) + left_out + validate_files(manifest)
    files: list[dict[str, str]] | None = None
    if sha256:
        columns = ["image_path", "sha256", "mask_path", "mask_sha256"]
        hashed = add_sha256(manifest).drop_duplicates(["image_path", "mask_path"])
        files = hashed[columns].to_dict("records")
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
    report: dict[str, Any] = {
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
    if files is not None:
        report["files"] = files
    return report


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
            elif file == path:  # named on the command line: an error
                images.problem(file, "is not an image, DICOM or NIfTI file; remove it from the inputs")
            else:  # a stray file in a folder (notes, exports of other tools): left out, said once
                warnings.warn(
                    f"{file} is not an image, DICOM or NIfTI file; it was left out (move it out of the folder to "
                    "silence this)",
                    DataWarning,
                    stacklevel=2,
                )
    if images.rows or images.problems or not frames:
        frames.insert(0, images.build(strict=False))
    manifest = concat(frames)
    problems = manifest.attrs["problems"]
    if strict and problems:
        raise problems_error(problems, ", ".join(str(p) for p in paths), "files")
    return manifest
