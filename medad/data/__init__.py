"""medad.data: dataset manifests in their public layouts, readers, MONAI transforms and synthetic layouts.

Every dataset kind is one module that registers a :class:`DatasetDescription` (its reader, splits, how ``auto``
recognises it, its class words and synthetic writers); :func:`load_manifest` turns a native layout into the
manifest table described in ``docs/architecture.md``, and nothing downstream reads folders. The names here are
the ones a user calls; the building blocks stay in their modules (``medad.data.mvtec.make_mvtec``,
``medad.data.manifest.COLUMNS``, ...).

Names are imported on first use (PEP 562): ``medad datasets check`` and ``medad validate`` read the catalogue
without loading torch / MONAI, which only the transforms (and the image readers, on first read) need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medad.data.checks import check_dataset
    from medad.data.description import DatasetDescription, Detector, register_dataset
    from medad.data.hashing import add_sha256
    from medad.data.interop import export_dataset, write_jsonl, write_meta_json
    from medad.data.nifti import slice_affine, volume_affine
    from medad.data.paths import manifest_from_paths
    from medad.data.readers import read_image, read_mask
    from medad.data.registry import (
        dataset_description,
        detect_kind,
        list_datasets,
        list_layouts,
        load_all_splits,
        load_manifest,
        write_layout,
    )
    from medad.data.transforms import make_dataset, normalize_images

_MODULE_OF = {
    "check_dataset": "checks",
    "DatasetDescription": "description",
    "Detector": "description",
    "register_dataset": "description",
    "add_sha256": "hashing",
    "export_dataset": "interop",
    "write_jsonl": "interop",
    "write_meta_json": "interop",
    "slice_affine": "nifti",
    "volume_affine": "nifti",
    "manifest_from_paths": "paths",
    "read_image": "readers",
    "read_mask": "readers",
    "dataset_description": "registry",
    "detect_kind": "registry",
    "list_datasets": "registry",
    "list_layouts": "registry",
    "load_all_splits": "registry",
    "load_manifest": "registry",
    "write_layout": "registry",
    "make_dataset": "transforms",
    "normalize_images": "transforms",
}

__all__ = [
    "DatasetDescription",
    "Detector",
    "add_sha256",
    "check_dataset",
    "dataset_description",
    "detect_kind",
    "export_dataset",
    "list_datasets",
    "list_layouts",
    "load_all_splits",
    "load_manifest",
    "make_dataset",
    "manifest_from_paths",
    "normalize_images",
    "read_image",
    "read_mask",
    "register_dataset",
    "slice_affine",
    "volume_affine",
    "write_jsonl",
    "write_layout",
    "write_meta_json",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its submodule on first access."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'medad.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medad.data.{module}"), name)
    globals()[name] = value
    return value
