"""Data manifests of a protocol run: build, fingerprint by content (file sha256), and the leakage guard.

A manifest's content hash is computed from each row's path *relative to the dataset root*, its labels and the
sha256 of its image and mask files, so the same data under another folder has the same hash (and a run
reuses stages computed from it), while any changed byte changes it. File hashes are cached per root by
(size, mtime) so a re-run does not read every image again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medad.errors import ConfigError
from medad.utils.io import hash_config, sha256_file, sha256_text, write_json_atomic, write_text_atomic
from medad.utils.privacy import private_dir, shareable_manifest

HASHED_COLUMNS = ("class_name", "split", "label", "defect_type", "group_id", "frame", "slice_axis", "mask_rule")


@dataclass
class DatasetData:
    """A dataset's manifest and its fingerprint.

    Attributes:
        name: the dataset's name in the protocol.
        kind: its dataset kind.
        root: the folder it was read from.
        manifest: the manifest (contract columns only).
        sha256: per row, the image file's sha256.
        mask_sha256: per row, the mask file's sha256 (empty when no mask).
        content_hash: hash of the manifest content (relative paths, labels, file hashes).
    """

    name: str
    kind: str
    root: Path
    manifest: pd.DataFrame
    sha256: list[str]
    mask_sha256: list[str]
    content_hash: str

    def table(self) -> pd.DataFrame:
        """The manifest with its file hashes, as stored in the run's data folder."""
        out = self.manifest.copy()
        out["sha256"] = self.sha256
        out["mask_sha256"] = self.mask_sha256
        return out


class FileHashCache:
    """sha256 of files, cached by (size, mtime_ns) in one JSON file per root.

    Args:
        folder: where the cache files live.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def hashes(self, root: Path, paths: list[str]) -> list[str]:
        """sha256 of each path ("" for an empty path)."""
        cache_file = self.folder / f"{sha256_text(str(root))[:16]}.json"
        cache: dict[str, list[Any]] = {}
        if cache_file.is_file():
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        out, changed = [], False
        for path in paths:
            if not path:
                out.append("")
                continue
            stat = os.stat(path)
            entry = cache.get(path)
            if entry is None or entry[0] != stat.st_size or entry[1] != stat.st_mtime_ns:
                entry = [stat.st_size, stat.st_mtime_ns, sha256_file(path)]
                cache[path] = entry
                changed = True
            out.append(entry[2])
        if changed:
            write_json_atomic(cache_file, cache)
        return out


def _relative(path: str, root: Path) -> str:
    if not path:
        return ""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _plain(value: Any) -> Any:
    if value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def fingerprint(name: str, kind: str, root: Path, manifest: pd.DataFrame, hashes: FileHashCache) -> DatasetData:
    """Hash a manifest's content (see the module docstring)."""
    images = [str(p) for p in manifest["image_path"]]
    masks = [str(p) if isinstance(p, str) else "" for p in manifest["mask_path"]]
    sha = hashes.hashes(root, images)
    mask_sha = hashes.hashes(root, masks)
    rows = [
        [_relative(img, root), _relative(msk, root), s, ms, *(_plain(manifest.iloc[i][c]) for c in HASHED_COLUMNS)]
        for i, (img, msk, s, ms) in enumerate(zip(images, masks, sha, mask_sha, strict=True))
    ]
    content = hash_config(
        {"kind": kind, "columns": ["image", "mask", "sha256", "mask_sha256", *HASHED_COLUMNS], "rows": rows}
    )
    return DatasetData(name, kind, root, manifest, sha, mask_sha, content)


def write_data_manifests(run_dir: Path, datasets: dict[str, DatasetData]) -> None:
    """Write each dataset's table (manifest + file sha256) twice: ``data/<name>.manifest.csv`` without source
    paths (shareable) and ``private/data/<name>.manifest.csv`` whole."""
    private = private_dir(run_dir) / "data"
    for name, data in datasets.items():
        table = data.table()
        write_text_atomic(private / f"{name}.manifest.csv", table.to_csv(index=False))
        write_text_atomic(run_dir / "data" / f"{name}.manifest.csv", shareable_manifest(table).to_csv(index=False))


def check_file_overlap(training: list[DatasetData], targets: list[DatasetData], intended: bool) -> list[str]:
    """Leakage guard, content part: training images that are also target images (same sha256).

    Returns:
        One note per overlapping (training, target) pair, for the report and provenance.

    Raises:
        ConfigError: when there is an overlap and ``intended`` is false.
    """
    notes = []
    for t in training:
        train_hashes = set(t.sha256)
        for d in targets:
            shared = [i for i, h in enumerate(d.sha256) if h in train_hashes]
            if not shared:
                continue
            example = d.manifest.iloc[shared[0]]["case_id"]
            note = (
                f"{len(shared)} of {len(d.sha256)} images of target {d.name!r} are byte-identical to images of "
                f"training dataset {t.name!r} (e.g. case {example})"
            )
            if not intended:
                raise ConfigError(
                    f"leakage: {note}; the evaluation would not be zero-shot. Use other training data, or set "
                    f"`intended_overlap: true` in the protocol to allow it (the report states it)"
                )
            notes.append(note)
    return notes
