"""The predictions store: per image, its manifest index, image score and pixel map at native resolution.

Predictions are written in chunks (one ``.npz`` per chunk, written atomically), so a run over thousands of
images never holds every map in memory, and an interrupted run resumes from the chunks already on disk.
Several writers (e.g. one per ``torchrun`` rank) may write into one folder under different tags; the reader
merges them and refuses an index written twice.

Layout::

    <folder>/meta.json               what produced the predictions (model, config, random weights or not)
    <folder>/chunks/<tag>-NNNNNN.npz arrays ``indices`` (int64), ``image_scores`` (float32) and ``map_<index>``
    <folder>/manifest.csv            the scored manifest without source paths (shareable)
    <folder>/../private/<name>.manifest.csv  the scored manifest with source paths (what export reads; never
                                     share); ``<name>`` is the folder's name, ``predictions`` for ``medad score``

The manifest with paths lives in the ``private/`` folder of the predictions folder's parent (a ``medad score``
output folder), or is the ``private/manifest.csv`` of its grandparent (a run folder's ``predictions/<model>``);
:func:`find_private_manifest` takes the one whose content hash equals ``meta.json``'s ``manifest_hash``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medad.errors import DataError
from medad.utils.io import atomic_open, write_json_atomic, write_text_atomic
from medad.utils.privacy import PRIVATE, private_dir, shareable_manifest

_CHUNK_RE = re.compile(r"^(?P<tag>[A-Za-z0-9_]+)-(?P<seq>\d{6})\.npz$")
MANIFEST_NAME = "manifest.csv"


def save_manifests(folder: str | Path, manifest: Any, private_root: str | Path | None = None) -> Path:
    """Save a predictions folder's manifest twice: without source paths in ``folder`` (shareable), and whole in
    ``<private_root>/private/<folder name>.manifest.csv`` (``private_root`` defaults to the folder's parent, so
    two predictions folders side by side keep their own).

    Returns:
        The private manifest's path.
    """
    folder = Path(folder)
    csv = {"index": False, "lineterminator": "\n"}
    private = private_dir(folder.parent if private_root is None else private_root) / f"{folder.name}.{MANIFEST_NAME}"
    write_text_atomic(private, manifest.to_csv(**csv))
    write_text_atomic(folder / MANIFEST_NAME, shareable_manifest(manifest).to_csv(**csv))
    return private


def find_private_manifest(folder: str | Path) -> Path | None:
    """The manifest with source paths of a predictions folder: ``private/<folder name>.manifest.csv`` of its
    parent or ``private/manifest.csv`` of its grandparent (a run folder), the first whose content hash equals the
    folder's ``meta.json`` ``manifest_hash`` (the first found, when the meta has none); ``None`` when none."""
    import json

    import pandas as pd

    from medad.engine.features import manifest_fingerprint

    folder = Path(folder)
    meta_path = folder / "meta.json"
    wanted = json.loads(meta_path.read_text(encoding="utf-8")).get("manifest_hash") if meta_path.is_file() else None
    for candidate in (
        folder.parent / PRIVATE / f"{folder.name}.{MANIFEST_NAME}",
        folder.parent.parent / PRIVATE / MANIFEST_NAME,
    ):
        if not candidate.is_file():
            continue
        if wanted is None:
            return candidate
        frame = pd.read_csv(candidate, dtype=str, keep_default_na=False)
        for column in ("label", "frame", "slice_axis"):
            if column in frame:
                frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce").astype("Int64")
        if manifest_fingerprint(frame) == wanted:
            return candidate
    return None


def predictions_random_weights(meta: Mapping[str, Any]) -> bool:
    """Whether a predictions folder's ``meta.json`` says its model's frozen weights were random.

    The top-level ``random_weights`` flag (written by :func:`medad.engine.scorer.predictions_meta`) wins; older
    folders fall back to the model card's flag. It concerns the frozen backbone / text weights only: adapters
    trained on a random backbone stay random, adapters trained on real frozen weights do not.
    """
    flag = meta.get("random_weights")
    if isinstance(flag, bool):
        return flag
    card = meta.get("model")
    return bool(card.get("random_weights", False)) if isinstance(card, Mapping) else False


class PredictionWriter:
    """Append predictions to a folder in atomically written chunks.

    Args:
        folder: the predictions folder (created if needed).
        chunk_size: images per chunk file.
        tag: writer tag used in chunk names (use one per process when sharding).
        meta: JSON-serialisable description of what produced the predictions, written to ``meta.json``.
    """

    def __init__(
        self, folder: str | Path, chunk_size: int = 64, tag: str = "p0", meta: dict[str, Any] | None = None
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", tag):
            raise ValueError(f"writer tag {tag!r} must be alphanumeric or underscore")
        self.folder = Path(folder)
        self.chunks = self.folder / "chunks"
        self.chunks.mkdir(parents=True, exist_ok=True)
        self.chunk_size = chunk_size
        self.tag = tag
        if meta is not None:
            write_json_atomic(self.folder / "meta.json", meta)
        existing = [int(m["seq"]) for p in self.chunks.iterdir() if (m := _CHUNK_RE.match(p.name)) and m["tag"] == tag]
        self._seq = max(existing, default=-1) + 1
        self._indices: list[int] = []
        self._scores: list[float] = []
        self._maps: list[np.ndarray] = []

    def done_indices(self) -> set[int]:
        """Indices already stored in this folder (by any writer), for resuming."""
        return set(PredictionReader(self.folder).indices.tolist())

    def add(self, indices: Sequence[int], image_scores: Sequence[float], maps: Sequence[np.ndarray]) -> None:
        """Buffer a batch of predictions; full chunks are flushed to disk."""
        if not (len(indices) == len(image_scores) == len(maps)):
            raise ValueError("indices, image_scores and maps must have the same length")
        for idx, score, pixel_map in zip(indices, image_scores, maps, strict=True):
            pixel_map = np.asarray(pixel_map, dtype=np.float32)
            if pixel_map.ndim != 2:
                raise ValueError(f"pixel map for index {idx} must be 2-D (H,W), got shape {pixel_map.shape}")
            self._indices.append(int(idx))
            self._scores.append(float(score))
            self._maps.append(pixel_map)
            if len(self._indices) >= self.chunk_size:
                self.flush()

    def flush(self) -> None:
        """Write buffered predictions as one chunk, renamed into place whole (not fsync'd: a re-run re-scores a
        chunk lost to an OS crash)."""
        if not self._indices:
            return
        arrays: dict[str, np.ndarray] = {
            "indices": np.asarray(self._indices, dtype=np.int64),
            "image_scores": np.asarray(self._scores, dtype=np.float32),
        }
        for idx, pixel_map in zip(self._indices, self._maps, strict=True):
            arrays[f"map_{idx}"] = pixel_map
        with atomic_open(self.chunks / f"{self.tag}-{self._seq:06d}.npz", "wb", durable=False) as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        self._seq += 1
        self._indices, self._scores, self._maps = [], [], []

    def close(self) -> None:
        """Flush what is left."""
        self.flush()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PredictionReader:
    """Read a predictions folder: all image scores at once, maps lazily chunk by chunk."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        chunk_dir = self.folder / "chunks"
        if not chunk_dir.is_dir():
            raise DataError(f"{self.folder} is not a predictions folder (no chunks/ inside); run `medad score` first")
        self._chunks = sorted(p for p in chunk_dir.iterdir() if _CHUNK_RE.match(p.name))
        indices, scores, owner = [], [], []
        for k, path in enumerate(self._chunks):
            with np.load(path) as data:
                indices.append(data["indices"])
                scores.append(data["image_scores"])
                owner.append(np.full(len(data["indices"]), k, dtype=np.int64))
        idx = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        idx = idx[order]
        dup = idx[1:][idx[1:] == idx[:-1]]
        if dup.size:
            raise DataError(f"{self.folder}: index {int(dup[0])} was written twice; delete the folder and re-score")
        self.indices: np.ndarray = idx
        self.image_scores: np.ndarray = np.concatenate(scores)[order] if scores else np.zeros(0, dtype=np.float32)
        self._owner = np.concatenate(owner)[order] if owner else np.zeros(0, dtype=np.int64)

    @property
    def meta(self) -> dict[str, Any]:
        """The writer's ``meta.json`` (empty if none)."""
        import json

        path = self.folder / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Images a scoring run could not read (``index``, ``case_id``, ``reason``; see
        :mod:`medad.engine.skipped`), minus any scored since; empty when none."""
        from medad.engine.skipped import skipped_entries

        return skipped_entries(self.folder, self.indices)

    def __len__(self) -> int:
        return int(self.indices.size)

    def get_map(self, index: int) -> np.ndarray:
        """Return the pixel map of one manifest index."""
        pos = np.searchsorted(self.indices, index)
        if pos >= self.indices.size or self.indices[pos] != index:
            raise KeyError(f"no prediction for index {index}")
        with np.load(self._chunks[self._owner[pos]]) as data:
            return data[f"map_{index}"]

    def iter_maps(self, indices: Sequence[int] | np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, map)`` in ascending index order, opening each chunk file once per run of indices."""
        wanted = self.indices if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
        pos = np.searchsorted(self.indices, wanted)
        missing = (pos >= self.indices.size) | (self.indices[np.minimum(pos, self.indices.size - 1)] != wanted)
        if self.indices.size == 0 or missing.any():
            bad = wanted[missing] if self.indices.size else wanted
            raise KeyError(f"no prediction for indices {bad[:5].tolist()}")
        owners = self._owner[pos]
        start = 0
        while start < wanted.size:
            stop = start
            while stop < wanted.size and owners[stop] == owners[start]:
                stop += 1
            with np.load(self._chunks[owners[start]]) as data:
                for index in wanted[start:stop]:
                    yield int(index), data[f"map_{index}"]
            start = stop
