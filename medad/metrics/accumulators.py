"""Streaming, exact accumulators: feed predictions in chunks, compute once (MONAI-style class + function pairs).

Exact and memory-bounded scheme (:class:`PixelMetrics`):

* ``update(maps, masks)`` turns each pixel into one uint64 key ``(score_key << 32) | component_size`` where
  ``score_key`` is the order-preserving uint32 image of the float32 score and ``component_size`` is the pixel
  count of the 8-connected (default) ground-truth component holding the pixel, 0 for a normal pixel. The chunk's
  keys are sorted once (numpy's SIMD sort) and kept as a sorted *run*. Runs beyond ``memory_limit_bytes`` are
  spilled to ``.npy`` files in a temporary folder and memory-mapped, so RAM stays bounded whatever the dataset.
* ``compute()`` walks all runs from the highest score down in rounds: each round takes from every run the keys
  at or above a cut score chosen so that no run gives more than about ``block_elements / n_runs`` distinct
  keys, reads them in pieces of that size, reduces every piece to per-distinct-score counts (so a huge tie,
  e.g. millions of pixels clipped to 0.0, costs one entry), merges the counts across runs (ties are never split
  between rounds) and feeds the per-score counts of normal pixels, anomalous pixels and summed
  ``1/|component|`` to :class:`~medad.metrics._core.CurveSweep`.

Nothing is binned: every distinct float32 score is a threshold, so the results equal the one-shot definitions
(and scikit-learn) up to floating-point summation order.
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medad.errors import DataError
from medad.metrics._core import (
    CurveSweep,
    NotApplicable,
    as_numpy,
    float32_keys,
    group_sorted_keys,
    keys_to_float32,
    merge_groups,
)


def component_sizes(masks: Any, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Label ground-truth components per image and return, per pixel, the size of its component.

    Args:
        masks: (N,H,W) or (H,W) boolean masks.
        connectivity: 8 (MVTec AD's convention, diagonal neighbours connect) or 4.

    Returns:
        ``(sizes, n_components)``: uint32 (N,H,W) component size per pixel (0 outside the masks) and int64 (N,)
        number of components per image. Components never span two images.
    """
    masks = _as_masks(masks)
    if connectivity not in (4, 8):
        raise DataError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, _ = ndimage.label(masks, structure=structure)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    sizes = counts.astype(np.uint32)[labels]
    top = np.maximum.accumulate(labels.reshape(len(labels), -1).max(axis=1)) if labels.size else np.zeros(0)
    n_comp = np.diff(np.concatenate([[0], top])).astype(np.int64)
    return sizes, n_comp


def _as_maps(maps: Any) -> np.ndarray:
    arr = as_numpy(maps, np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"score maps must be (N,H,W) or (H,W), got shape {arr.shape}")
    return arr


def _as_masks(masks: Any) -> np.ndarray:
    arr = as_numpy(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"masks must be (N,H,W) or (H,W), got shape {arr.shape}")
    return arr.astype(bool, copy=False)


class _MemoryRun:
    """A sorted run held in memory."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.keys[start:stop]

    def search(self, value: np.uint64, stop: int) -> int:
        return int(np.searchsorted(self.keys[:stop], value, side="left"))


class _SpilledRun:
    """A sorted run spilled to an ``.npy`` file and read with plain positional reads.

    No memory map: mapped pages (with the kernel's read-ahead) would stay resident and count as process memory.
    Binary search reads ~log2(n) single keys; blocks are read whole.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        header = np.load(path, mmap_mode="r")
        self._offset = int(header.offset)
        self._len = len(header)
        del header
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> np.uint64:
        return np.frombuffer(os.pread(self._fd, 8, self._offset + 8 * index), dtype=np.uint64)[0]

    @property
    def keys(self) -> _SpilledRun:
        return self

    def search(self, value: np.uint64, stop: int) -> int:
        return bisect.bisect_left(self, value, 0, stop)

    def read(self, start: int, stop: int) -> np.ndarray:
        data = os.pread(self._fd, 8 * (stop - start), self._offset + 8 * start)
        return np.frombuffer(data, dtype=np.uint64).copy()


class PixelMetrics:
    """Exact pooled pixel AUROC / AP / F1-max and AUPRO over predictions fed in chunks.

    Args:
        fpr_limit: upper FPR limit of the AUPRO integral (MVTec AD: 0.3); the curve is interpolated linearly at
            exactly this FPR and the integral divided by it.
        connectivity: ground-truth component connectivity for AUPRO, 8 (default, as MVTec AD) or 4.
        with_pro: compute AUPRO (needs connected-component labelling; off for the pixel-only functions).
        memory_limit_bytes: in-memory size of the sorted runs above which they are spilled to disk.
        spill_dir: parent folder of the temporary spill folder (default: the system temp folder).
        block_elements: keys merged per round in :meth:`compute` (bounds the compute-time memory).
    """

    def __init__(
        self,
        fpr_limit: float = 0.3,
        connectivity: int = 8,
        with_pro: bool = True,
        memory_limit_bytes: int = 1 << 29,
        spill_dir: str | Path | None = None,
        block_elements: int = 1 << 20,
    ) -> None:
        if not 0.0 < fpr_limit <= 1.0:
            raise DataError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        self.fpr_limit = float(fpr_limit)
        self.connectivity = connectivity
        self.with_pro = with_pro
        self.memory_limit_bytes = int(memory_limit_bytes)
        self.spill_dir = spill_dir
        self.block_elements = int(block_elements)
        self.n_pos = 0
        self.n_neg = 0
        self.n_comp = 0
        self.n_images = 0
        self._runs: list[np.ndarray | _SpilledRun] = []
        self._tmp: str | None = None
        self._result: dict[str, Any] | None = None
        self._sweep: CurveSweep | None = None

    def update(self, maps: Any, masks: Any, sizes: Any = None, n_comp: Any = None) -> None:
        """Add a chunk: score maps (N,H,W) and boolean masks (N,H,W), or lists of (H,W) arrays of mixed sizes.

        Args:
            maps: float scores (compared at float32 precision).
            masks: ground truth, True = anomalous (ignored when ``sizes`` is given).
            sizes: precomputed :func:`component_sizes` output per image (saves relabelling when several models
                share the masks), same layout as ``maps``.
            n_comp: the matching number of components per image.
        """
        map_list = [_as_maps(m)[0] for m in maps] if isinstance(maps, (list, tuple)) else list(_as_maps(maps))
        if sizes is None:
            mask_list = [_as_masks(m)[0] for m in masks] if isinstance(masks, (list, tuple)) else list(_as_masks(masks))
            if len(mask_list) != len(map_list):
                raise DataError(f"{len(map_list)} score maps but {len(mask_list)} masks")
            sizes, n_comp = [], []
            for m, mask in zip(map_list, mask_list, strict=True):
                if m.shape != mask.shape:
                    raise DataError(f"score map {m.shape} and mask {mask.shape} differ in shape")
                if self.with_pro:
                    s, c = component_sizes(mask, self.connectivity)
                    sizes.append(s[0])
                    n_comp.append(int(c[0]))
                else:
                    sizes.append(mask.astype(np.uint32))
                    n_comp.append(0)
        size_list = list(sizes)
        if len(size_list) != len(map_list) or any(m.shape != s.shape for m, s in zip(map_list, size_list, strict=True)):
            raise DataError("score maps and masks differ in number or shape")
        if not map_list:
            return
        total = sum(m.size for m in map_list)
        run = np.empty(total, dtype=np.uint64)
        words = run.view(np.uint32)
        key_words, size_words = (words[1::2], words[0::2]) if np.little_endian else (words[0::2], words[1::2])
        offset, n_pos = 0, 0
        for m, s in zip(map_list, size_list, strict=True):
            key_words[offset : offset + m.size] = float32_keys(m).ravel()
            size_words[offset : offset + m.size] = np.asarray(s).ravel()
            n_pos += int(np.count_nonzero(s))
            offset += m.size
        self.n_pos += n_pos
        self.n_neg += int(total - n_pos)
        self.n_comp += int(np.sum(n_comp))
        self.n_images += len(map_list)
        run.sort()
        self._runs.append(run)
        self._result = None
        self._spill_if_needed()

    def _spill_if_needed(self) -> None:
        in_memory = [(k, r) for k, r in enumerate(self._runs) if not isinstance(r, _SpilledRun)]
        if sum(r.nbytes for _, r in in_memory) <= self.memory_limit_bytes:
            return
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="medad-pixelmetrics-", dir=self.spill_dir)
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
        for k, r in in_memory:
            path = Path(self._tmp) / f"run-{id(r)}-{k}.npy"
            np.save(path, r)
            self._runs[k] = _SpilledRun(path)

    @classmethod
    def merged(cls, parts: list[PixelMetrics]) -> PixelMetrics:
        """A new accumulator holding the data of ``parts`` (e.g. classes pooled into a dataset); no copies."""
        if not parts:
            raise DataError("nothing to merge")
        first = parts[0]
        out = cls(
            first.fpr_limit,
            first.connectivity,
            first.with_pro,
            first.memory_limit_bytes,
            first.spill_dir,
            first.block_elements,
        )
        for part in parts:
            out._runs.extend(part._runs)
            out.n_pos += part.n_pos
            out.n_neg += part.n_neg
            out.n_comp += part.n_comp
            out.n_images += part.n_images
        return out

    def _sweep_all(self, record: int | None) -> CurveSweep:
        sweep = CurveSweep(
            np.array([self.n_pos]),
            np.array([self.n_neg]),
            np.array([self.n_comp]) if self.with_pro else None,
            self.fpr_limit,
            record=record,
        )
        runs = [r if isinstance(r, _SpilledRun) else _MemoryRun(r) for r in self._runs if len(r)]
        ends = [len(r) for r in runs]
        per_run = max(self.block_elements // max(len(runs), 1), 1 << 10)
        while any(ends):
            live = [k for k, e in enumerate(ends) if e]
            cut = max(int(runs[k].keys[max(ends[k] - per_run, 0)] >> np.uint64(32)) for k in live)
            low = np.uint64(cut) << np.uint64(32)
            groups = []
            for k in live:
                start = runs[k].search(low, ends[k])
                for piece in range(start, ends[k], per_run):
                    groups.append(group_sorted_keys(runs[k].read(piece, min(piece + per_run, ends[k]))))
                ends[k] = start
            keys, neg, pos, w = groups[0] if len(groups) == 1 else merge_groups(groups)
            sweep.consume(neg, pos, w, keys_to_float32(keys))
        return sweep

    def compute(self) -> dict[str, float | NotApplicable]:
        """Return ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max``, ``pixel_f1_threshold`` and ``aupro``.

        Undefined metrics are :class:`NotApplicable`: AUROC without normal or anomalous pixels, AP / F1 without
        anomalous pixels, AUPRO without ground-truth components or without normal pixels.
        """
        if self._result is None:
            self._sweep = self._sweep_all(record=2048)
            res = self._sweep.results()
            no_pos = NotApplicable("no anomalous pixels in the ground truth")
            no_neg = NotApplicable("no normal pixels in the ground truth")
            empty = NotApplicable("no pixels")
            out: dict[str, float | NotApplicable] = {}
            for name, key in (
                ("pixel_auroc", "auroc"),
                ("pixel_ap", "ap"),
                ("pixel_f1_max", "f1_max"),
                ("pixel_f1_threshold", "f1_threshold"),
            ):
                out[name] = float(res[key][0])
            if self.with_pro:
                out["aupro"] = float(res["aupro"][0])
            for name, value in list(out.items()):
                if isinstance(value, float) and np.isnan(value):
                    if self.n_pos + self.n_neg == 0:
                        out[name] = empty
                    elif self.n_pos == 0:
                        out[name] = no_pos
                    else:
                        out[name] = no_neg
            self._result = out
        return dict(self._result)

    def curves(self, max_points: int = 512) -> dict[str, dict[str, list[float]]]:
        """ROC, PR and (with ``with_pro``) PRO curves, each downsampled to at most ``max_points`` points."""
        self.compute()
        assert self._sweep is not None
        return self._sweep.curves(max_points)


class ImageMetrics:
    """Exact image-level AUROC / AP / F1-max over scores fed in chunks (image scores are small, kept in full)."""

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, scores: Any, labels: Any) -> None:
        """Add image scores (N,) and binary labels (N,) (1 = abnormal)."""
        scores = as_numpy(scores, np.float64).ravel()
        labels = as_numpy(labels).ravel()
        if scores.shape != labels.shape:
            raise DataError(f"{scores.size} image scores but {labels.size} labels")
        if np.isnan(scores).any():
            raise DataError("an image score is NaN; fix the model output before evaluating")
        if not np.isin(labels, (0, 1)).all():
            raise DataError("image labels must be 0 (normal) or 1 (abnormal); drop unlabelled images first")
        self._scores.append(scores)
        self._labels.append(labels.astype(bool))

    def _sweep(self, record: bool | int | None) -> CurveSweep:
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=bool)
        values, inverse = np.unique(scores, return_inverse=True)
        pos = np.bincount(inverse, weights=labels, minlength=values.size)[::-1]
        neg = np.bincount(inverse, minlength=values.size)[::-1] - pos
        sweep = CurveSweep(np.array([labels.sum()]), np.array([(~labels).sum()]), record=record)
        sweep.consume(neg, pos, values=values[::-1])
        return sweep

    def compute(self) -> dict[str, float | NotApplicable]:
        """Return ``image_auroc``, ``image_ap``, ``image_f1_max``.

        All three are NotApplicable unless both normal and abnormal images are present: on an all-abnormal set
        (ISIC, CVC, TN3K test splits) AP and F1-max would be a trivial 1.0 that says nothing about detection.
        """
        sweep = self._sweep(record=False)
        res = sweep.results()
        n_pos, n_neg = int(sweep.n_pos[0]), int(sweep.n_neg[0])
        out: dict[str, float | NotApplicable] = {}
        for name, key in (("image_auroc", "auroc"), ("image_ap", "ap"), ("image_f1_max", "f1_max")):
            value = float(res[key][0])
            if n_pos == 0 or n_neg == 0 or np.isnan(value):
                out[name] = NotApplicable("no abnormal images" if n_pos == 0 else "no normal images")
            else:
                out[name] = value
        return out

    def curves(self, max_points: int | None = 512) -> dict[str, dict[str, list[float]]]:
        """Exact ROC and PR curves (every distinct score a point), downsampled to ``max_points`` if given."""
        return self._sweep(record=None).curves(max_points)
