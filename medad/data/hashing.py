"""Per-file sha256 of a manifest's images and masks (the optional ``sha256`` / ``mask_sha256`` columns)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import pandas as pd
from tqdm.auto import tqdm

from medad.errors import DataError
from medad.utils.io import sha256_file


def file_hashes(paths: Iterable[str], progress: bool = False) -> dict[str, str]:
    """Hex sha256 of each distinct file in ``paths`` (each file is read once).

    Raises:
        DataError: A file cannot be read.
    """
    unique = list(dict.fromkeys(p for p in paths if p))
    hashes: dict[str, str] = {}
    for path in tqdm(unique, desc="sha256", unit="file", disable=not progress, file=sys.stderr):
        try:
            hashes[path] = sha256_file(path)
        except OSError as exc:
            raise DataError(
                f"{path} cannot be read to hash it ({exc.strerror or type(exc).__name__}); restore the file or "
                "rebuild the manifest"
            ) from None
    return hashes


def add_sha256(manifest: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
    """A copy of ``manifest`` with ``sha256`` (image file) and ``mask_sha256`` (``""`` without mask) columns.

    Args:
        manifest: A manifest.
        progress: Show a progress bar on stderr.

    Returns:
        The manifest with the two columns added (or replaced); rows sharing a file (DICOM frames, NIfTI slices)
        share its hash.

    Raises:
        DataError: An image or mask cannot be read.
    """
    images = manifest["image_path"].astype(str).tolist()
    masks = manifest["mask_path"].astype(str).tolist()
    hashes = file_hashes([*images, *masks], progress=progress)
    out = manifest.copy()
    out["sha256"] = [hashes[p] for p in images]
    out["mask_sha256"] = [hashes[p] if p else "" for p in masks]
    return out
