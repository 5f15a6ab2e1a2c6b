"""On-disk cache of frozen-backbone features, so training epochs after the first skip the backbone.

AD-DINOv3 trains only small adapters on top of a frozen DINOv3 backbone, and training uses no augmentation,
so ``model.forward_features(images)`` gives the same tensors every epoch. :class:`FeatureCache` computes them
once, in manifest order, and stores them as safetensors chunks (one file per ``chunk_size`` manifest indices,
each written atomically, so an interrupted extraction resumes at the first missing chunk). Each chunk also
holds the training masks and labels, so later epochs read no image file at all.

The cache folder name is a hash of everything the features depend on: the model's frozen weights (a
fingerprint of the frozen parameters themselves, which also covers random-initialised backbones), its
config, the manifest (paths, frames, sizes and modification times of the files), the image size and the
autocast dtype. A change to any of them gives a new folder; nothing stale is ever read.

Layout::

    <cache_root>/features/<key>/chunk-NNNNNN.safetensors   tensors ``<name>`` (n, ...), ``mask``, ``label``,
                                                            ``index``; metadata ``structure`` (JSON)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save
from torch.utils.data import DataLoader, Dataset

from medad.utils.io import hash_config, write_bytes_atomic

if TYPE_CHECKING:
    from medad.models import TrainableAnomalyModel

Features = dict[str, Any]
"""What ``model.forward_features`` returns: a dict of batch-first tensors (or lists/tuples of them)."""

_MANIFEST_KEY_COLUMNS = ("image_path", "frame", "slice_axis", "mask_path", "mask_rule", "label", "class_name")
INPUT_COLUMNS = ("image_path", "frame", "slice_axis", "class_name")
"""The manifest columns a model's predictions depend on (the image and the class word), not the truth (masks,
labels): predictions scored before masks were given still pair with the images of a manifest that has them."""


def default_cache_root() -> Path:
    """Return medad's cache folder: ``$MEDAD_CACHE`` if set, else ``~/.cache/medad``."""
    env = os.environ.get("MEDAD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "medad"


def manifest_fingerprint(
    manifest: pd.DataFrame, with_file_stats: bool = False, columns: Sequence[str] = _MANIFEST_KEY_COLUMNS
) -> str:
    """Hash the rows of a manifest that decide what a model sees and what it is measured against.

    Args:
        manifest: a medad manifest (see ``docs/architecture.md``).
        with_file_stats: also hash each image and mask file's size and modification time, so an edited file
            changes the hash (used for cache keys; leave off for a hash that is stable across machines).
        columns: the columns hashed (default: images, class words and the truth; :data:`INPUT_COLUMNS`: the
            model's inputs only, see :func:`inputs_fingerprint`).

    Returns:
        The first 16 hex digits of a sha256.
    """
    columns = [c for c in columns if c in manifest.columns]
    rows = []
    for record in manifest[columns].itertuples(index=False):
        row = ["" if pd.isna(v) else str(v) for v in record]
        if with_file_stats:
            for path in (_manifest_value(record, columns, "image_path"), _manifest_value(record, columns, "mask_path")):
                if path and os.path.exists(path):
                    stat = os.stat(path)
                    row += [str(stat.st_size), str(stat.st_mtime_ns)]
        rows.append(row)
    return hash_config({"columns": columns, "rows": rows})


def inputs_fingerprint(manifest: pd.DataFrame) -> str:
    """Hash of what a model's predictions depend on, row by row (:data:`INPUT_COLUMNS`): equal for a manifest
    that only adds or changes masks and labels, so such predictions are evaluated without scoring again."""
    return manifest_fingerprint(manifest, columns=INPUT_COLUMNS)


def _manifest_value(record: tuple[Any, ...], columns: Sequence[str], name: str) -> str:
    """Return column ``name`` of an ``itertuples`` record as a string (``""`` when absent or missing)."""
    if name not in columns:
        return ""
    value = record[list(columns).index(name)]
    return "" if pd.isna(value) else str(value)


def frozen_fingerprint(model: torch.nn.Module) -> str:
    """Hash the bytes of every frozen (``requires_grad=False``) parameter of a model.

    Hashing the tensors rather than trusting weight ids makes the key right for random-initialised
    backbones too (whose weights depend on the seed).
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        data = param.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_cache_key(model: TrainableAnomalyModel, manifest: pd.DataFrame, amp_dtype: torch.dtype | None) -> str:
    """Return the cache folder name for a model's features of a manifest.

    Args:
        model: a medad model (``card()``, ``image_size``, frozen parameters).
        manifest: the manifest whose images are featurised.
        amp_dtype: the autocast dtype features are computed under (``None`` for fp32).
    """
    card = model.card()
    return hash_config(
        {
            "model": card.get("name"),
            "config": card.get("config"),
            "frozen": frozen_fingerprint(model),
            "image_size": int(model.image_size),
            "manifest": manifest_fingerprint(manifest, with_file_stats=True),
            "amp": str(amp_dtype),
        }
    )


def flatten_features(features: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten a features dict (values: tensors or lists/tuples of tensors) into named tensors + a structure."""
    flat: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {}
    for name, value in features.items():
        if isinstance(value, torch.Tensor):
            flat[f"f.{name}"] = value
            structure[name] = None
        elif isinstance(value, list | tuple) and all(isinstance(v, torch.Tensor) for v in value):
            for k, v in enumerate(value):
                flat[f"f.{name}.{k}"] = v
            structure[name] = len(value)
        else:
            raise TypeError(f"forward_features output {name!r} is a {type(value).__name__}; expected tensors")
    return flat, structure


def unflatten_features(flat: Mapping[str, torch.Tensor], structure: Mapping[str, Any]) -> Features:
    """Invert :func:`flatten_features`."""
    out: Features = {}
    for name, length in structure.items():
        out[name] = flat[f"f.{name}"] if length is None else [flat[f"f.{name}.{k}"] for k in range(length)]
    return out


class FeatureCache:
    """Frozen features (plus masks and labels) of every manifest row, stored in safetensors chunks.

    Args:
        folder: the cache folder of one key (see :func:`feature_cache_key`).
        n_items: number of manifest rows.
        chunk_size: manifest rows per chunk file.
    """

    def __init__(self, folder: str | Path, n_items: int, chunk_size: int = 64) -> None:
        self.folder = Path(folder)
        self.n_items = n_items
        self.chunk_size = chunk_size
        self.n_chunks = (n_items + chunk_size - 1) // chunk_size
        self._structure: dict[str, Any] | None = None

    def chunk_path(self, chunk: int) -> Path:
        """Path of chunk number ``chunk``."""
        return self.folder / f"chunk-{chunk:06d}.safetensors"

    def missing_chunks(self) -> list[int]:
        """Chunk numbers not yet on disk."""
        return [k for k in range(self.n_chunks) if not self.chunk_path(k).exists()]

    def complete(self) -> bool:
        """Whether every chunk is on disk."""
        return not self.missing_chunks()

    def build(
        self,
        dataset: Dataset,
        extract: Callable[[torch.Tensor], Features],
        batch_size: int,
        device: torch.device,
        num_workers: int = 0,
        progress: bool = False,
    ) -> None:
        """Compute and store the missing chunks.

        Args:
            dataset: the ``make_dataset`` dataset of the manifest (samples with ``image``, ``mask``, ``label``,
                ``index``), indexed by manifest position.
            extract: ``model.forward_features`` (already under the wanted autocast).
            batch_size: images per backbone forward pass.
            device: where the backbone runs.
            num_workers: DataLoader workers.
            progress: show a tqdm bar.
        """
        from tqdm.auto import tqdm

        missing = self.missing_chunks()
        if not missing:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        todo = [i for k in missing for i in range(k * self.chunk_size, min((k + 1) * self.chunk_size, self.n_items))]
        batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=device.type == "cuda")
        buffer: dict[int, list[dict[str, torch.Tensor]]] = {}
        for batch in tqdm(loader, desc="caching features", unit="batch", disable=not progress):
            feats = extract(batch["image"].to(device, non_blocking=True))
            flat, structure = flatten_features(feats)
            self._structure = structure
            flat = {k: v.detach().to("cpu") for k, v in flat.items()}
            for row, index in enumerate(batch["index"].tolist()):
                item = {k: v[row].clone() for k, v in flat.items()}
                item["mask"] = (batch["mask"][row] > 0.5).to(torch.uint8)
                item["label"] = batch["label"][row].to(torch.int64)
                item["index"] = torch.tensor(index, dtype=torch.int64)
                buffer.setdefault(index // self.chunk_size, []).append(item)
            for chunk in sorted(buffer):
                expected = min((chunk + 1) * self.chunk_size, self.n_items) - chunk * self.chunk_size
                if len(buffer[chunk]) == expected:
                    self._write_chunk(chunk, buffer.pop(chunk), structure)

    def _write_chunk(self, chunk: int, items: list[dict[str, torch.Tensor]], structure: dict[str, Any]) -> None:
        items = sorted(items, key=lambda it: int(it["index"]))
        tensors = {name: torch.stack([it[name] for it in items]).contiguous() for name in items[0]}
        data = safetensors_save(tensors, metadata={"structure": json.dumps(structure, sort_keys=True)})
        write_bytes_atomic(self.chunk_path(chunk), data)

    def load_item(self, index: int) -> dict[str, Any]:
        """Return one row's cached sample: ``features`` (dict), ``mask`` (1,S,S) float, ``label``, ``index``."""
        chunk, row = divmod(index, self.chunk_size)
        with safe_open(str(self.chunk_path(chunk)), framework="pt") as handle:
            if self._structure is None:
                self._structure = json.loads(handle.metadata()["structure"])
            flat = {name: handle.get_slice(name)[row : row + 1][0] for name in handle.keys()}  # noqa: SIM118
        return {
            "features": unflatten_features(flat, self._structure),
            "mask": flat["mask"].to(torch.float32),
            "label": flat["label"],
            "index": flat["index"],
        }


class CachedFeatureDataset(Dataset):
    """A map-style dataset over a complete :class:`FeatureCache`, indexed by manifest position."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return self.cache.n_items

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.cache.load_item(int(index))
