"""Few-shot references: the k normal images a target is compared with, drawn reproducibly and checked.

A :class:`ReferenceSet` is the drawn rows (a manifest with private paths), how they were drawn (``shots``,
``seed``, ``draw``) and how their nearest-neighbour map is fused with the model's own (``weight``, ``radii``).
:func:`draw_references` draws one from a pool of normal images; :func:`check_references` refuses references that
would make a result meaningless (a reference that is also a target; another channel count or source format than
the targets). :func:`reference_manifest` reads ``medad score --reference`` paths. Scoring with references:
:mod:`medad.engine.fewshot`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medad.errors import ConfigError, DataError

DEFAULT_RADII = (1, 3, 5)
"""Neighbourhood aggregation radii of the memory bank (MuSc's and AF-CLIP's r in {1, 3, 5})."""


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """The normal reference images of a few-shot scoring run and how they are used.

    Attributes:
        manifest: the drawn reference rows (their ``image_path`` is private: never in a shareable file).
        shots: how many images were drawn (``k``).
        seed: the draw's seed.
        draw: the draw's number (draws of one seed differ).
        weight: weight of the few-shot map in the fused map; ``None`` uses the model's ``fewshot_weight``.
        radii: neighbourhood aggregation radii of the memory bank.
    """

    manifest: pd.DataFrame
    shots: int
    seed: int
    draw: int
    weight: float | None = None
    radii: tuple[int, ...] = DEFAULT_RADII

    def __post_init__(self) -> None:
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"--fewshot-weight (weight) {self.weight:g} is outside [0, 1]; give e.g. 0.5")
        bad = [r for r in self.radii if r < 1 or r % 2 == 0]
        if not self.radii or bad:
            raise ConfigError(f"reference radii {list(self.radii)} must be odd sizes >= 1; give e.g. (1, 3, 5)")

    def record(self) -> dict[str, Any]:
        """What a predictions folder's ``meta.json`` records (shareable: case ids, no path)."""
        ids = self.manifest["case_id"].astype(str).tolist() if "case_id" in self.manifest.columns else []
        return {
            "shots": self.shots,
            "seed": self.seed,
            "draw": self.draw,
            "weight": self.weight,
            "radii": list(self.radii),
            "case_ids": ids,
        }


def describe_record(record: Mapping[str, Any] | None) -> str:
    """A reference record in words, for a message (``none (zero-shot)`` when there is none)."""
    if not record:
        return "none (zero-shot)"
    ids = ", ".join(record.get("case_ids", []))
    return (
        f"{record.get('shots')}-shot draw {record.get('draw')} of seed {record.get('seed')} "
        f"(weight {record.get('weight')}, radii {record.get('radii')}, references {ids})"
    )


def draw_key(row: Mapping[str, Any], root: str) -> str:
    """The machine-independent name a pool row is drawn by: its path below the pool's root, and its frame."""
    rel = os.path.relpath(str(row["image_path"]), root) if root else str(row["image_path"])
    frame = row.get("frame")
    return f"{Path(rel).as_posix()}#{'' if frame is None or pd.isna(frame) else int(frame)}"


def draw_references(
    pool: pd.DataFrame,
    shots: int,
    *,
    seed: int,
    draw: int = 0,
    source: str,
    weight: float | None = None,
    radii: Sequence[int] = DEFAULT_RADII,
) -> ReferenceSet:
    """Draw ``shots`` normal images from ``pool``, reproducibly.

    Each row is ranked by the sha256 of ``seed``, ``draw`` and its path below the pool's common folder (plus its
    frame), and the ``shots`` lowest are drawn: the same seed and draw give the same images on any machine and in
    any row order, another draw gives another set, and a larger ``shots`` keeps the smaller draw's images (1-shot
    is inside 2-shot is inside 4-shot).

    Args:
        pool: the candidate reference rows (a manifest; ``label`` 0 or unknown).
        shots: how many images to draw (>= 1).
        seed: the draws' seed.
        draw: which draw of that seed.
        source: how messages name the pool (the folder or split it came from).
        weight: the fused map's few-shot weight (``None``: the model's).
        radii: neighbourhood aggregation radii of the memory bank.

    Raises:
        ConfigError: ``shots`` below 1.
        DataError: ``pool`` holds an image labelled abnormal, or fewer images than ``shots``.
    """
    if shots < 1:
        raise ConfigError(f"--shots {shots} must be >= 1 (the number of normal reference images)")
    _refuse_abnormal(pool, f"reference pool {source}")
    if len(pool) < shots:
        raise DataError(
            f"reference pool {source} holds {len(pool)} image(s), fewer than --shots {shots}; lower --shots to "
            f"{len(pool) or 1} or add normal images to {source}"
        )
    paths = pool["image_path"].astype(str).tolist()
    root = os.path.commonpath(paths) if len(set(paths)) > 1 else os.path.dirname(paths[0])
    rows = pool.to_dict("records")
    rank = [hashlib.sha256(f"{seed}\x00{draw}\x00{draw_key(r, root)}".encode()).hexdigest() for r in rows]
    chosen = sorted(range(len(rows)), key=lambda i: rank[i])[:shots]
    drawn = pool.iloc[sorted(chosen)].reset_index(drop=True)
    return ReferenceSet(drawn, shots, seed, draw, weight, tuple(int(r) for r in radii))


def _refuse_abnormal(pool: pd.DataFrame, subject: str) -> None:
    """Refuse a pool with rows labelled abnormal (label 1), naming the first one and the fix."""
    if "label" not in pool.columns:
        return
    abnormal = pool[pool["label"].fillna(0).astype(int) == 1]
    if abnormal.empty:
        return
    raise DataError(
        f"{subject} holds {len(abnormal)} image(s) labelled abnormal (e.g. "
        f"{row_name(abnormal.iloc[0])}); references must be normal: give only the normal images (e.g. the "
        "layout's train/good or no/ folder)"
    )


def row_name(row: Mapping[str, Any]) -> str:
    """How a message names a row: a plain image by its path, a DICOM / NIfTI source by its case id."""
    if str(row.get("source_format") or "image") != "image" and row.get("case_id"):
        return f"{row.get('source_format')} image of case {row['case_id']}"
    return str(row["image_path"])


def check_references(refs: ReferenceSet, targets: pd.DataFrame) -> None:
    """Refuse references that would make a few-shot result meaningless.

    A reference that is also a target (same file, or same content by sha256: the nearest neighbour of a target
    would be itself) and references of an image kind the targets do not hold (another channel count, greyscale
    against colour, or another source format, e.g. DICOM against PNG exports: the features change with what the
    reader does) are refused. Another image size is not: every image is resized to the model input.

    A reference set built by hand (not by :func:`draw_references`) is held to the draw's rules too: no image
    labelled abnormal, and at least ``shots`` (and one) images.

    Raises:
        DataError: naming the file and the fix.
    """
    _refuse_abnormal(refs.manifest, "the reference set")
    if len(refs.manifest) < max(1, refs.shots):
        raise DataError(
            f"the reference set holds {len(refs.manifest)} image(s) for {refs.shots} shots; draw it with "
            "draw_references(pool, shots, ...) from a pool of at least that many normal images"
        )
    _refuse_leak(refs.manifest, targets)
    _refuse_other_kind(refs.manifest, targets)


def _image_keys(manifest: pd.DataFrame, column: str) -> list[tuple[str, str]]:
    frames = manifest["frame"] if "frame" in manifest.columns else pd.Series([None] * len(manifest))
    return [
        (str(value), "" if frame is None or pd.isna(frame) else str(int(frame)))
        for value, frame in zip(manifest[column].tolist(), frames.tolist(), strict=True)
    ]


def _refuse_leak(references: pd.DataFrame, targets: pd.DataFrame) -> None:
    """A reference that is also a target, by resolved path or by content (sha256), is refused."""
    from medad.data.hashing import add_sha256

    resolved = {(str(Path(p).resolve()), f) for p, f in _image_keys(targets, "image_path")}
    refs = references.assign(image_path=[str(Path(p).resolve()) for p in references["image_path"].astype(str)])
    for i, key in enumerate(_image_keys(refs, "image_path")):
        if key in resolved:
            _leak_error(references.iloc[i])
    hashed_targets = set(_image_keys(add_sha256(targets), "sha256"))
    for i, key in enumerate(_image_keys(add_sha256(references), "sha256")):
        if key in hashed_targets:
            _leak_error(references.iloc[i])


def _leak_error(row: Mapping[str, Any]) -> None:
    raise DataError(
        f"reference {row_name(row)} is also among the targets (same file or same content); a reference must never "
        "be scored: remove it from the targets or from the reference folder"
    )


def image_kind(row: Mapping[str, Any]) -> str:
    """What the reader makes of a row's image, read from its header: ``<format>, greyscale`` or ``<format>,
    colour`` (the channel count and source format that change the features; the size does not)."""
    source = str(row.get("source_format") or "image")
    if source == "nifti":
        return "nifti, greyscale"
    if source == "dicom":
        from medad.data.dicom import read_header
        from medad.data.readers import source_name

        samples = int(read_header(Path(str(row["image_path"])), source_name(row)).get("SamplesPerPixel", 1) or 1)
        return f"dicom, {'greyscale' if samples == 1 else 'colour'}"
    from PIL import Image

    try:
        with Image.open(str(row["image_path"])) as image:
            grey = image.mode in {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
    except (OSError, ValueError) as exc:
        raise DataError(f"image {row['image_path']} cannot be opened ({type(exc).__name__}); remove it") from None
    return f"image, {'greyscale' if grey else 'colour'}"


def _refuse_other_kind(references: pd.DataFrame, targets: pd.DataFrame) -> None:
    """Every reference must be of an image kind that the targets hold.

    Targets of one kind (the usual case) take references of that kind only. A target set that itself mixes kinds
    (a public download holding greyscale and RGB copies of the same kind of image, e.g. Kaggle's BrainMRI and HeadCT)
    takes references of any kind it holds, since the reader turns each of them into the same RGB input."""
    first: dict[str, Mapping[str, Any]] = {}
    seen: set[str] = set()
    for row in targets.to_dict("records"):
        path = str(row["image_path"])
        if path in seen:  # the frames of one DICOM file, the slices of one NIfTI volume: one header
            continue
        seen.add(path)
        first.setdefault(image_kind(row), row)
    for row in references.to_dict("records"):
        kind = image_kind(row)
        if first and kind not in first:
            held = " and ".join(sorted(first))
            example = row_name(next(iter(first.values())))
            raise DataError(
                f"reference {row_name(row)} is {kind} but the targets are {held} (e.g. {example}); give references "
                "stored as the targets are (same channel count and format), or score the two kinds separately"
            )


def reference_manifest(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The reference pool of ``medad score --reference``: one folder read in its layout (every split, so a
    labelled layout's abnormal images are seen and refused), else the files and folders as given (labels unknown,
    taken as normal).

    Raises:
        DataError: no images found.
    """
    from medad.data import load_all_splits, manifest_from_paths

    if len(paths) == 1 and Path(paths[0]).is_dir():
        pool = load_all_splits(paths[0], "auto")
    else:
        pool = manifest_from_paths([str(p) for p in paths])
    if len(pool) == 0:
        raise DataError(f"no images found in reference {', '.join(map(str, paths))}; give a folder of normal images")
    return pool.reset_index(drop=True)
