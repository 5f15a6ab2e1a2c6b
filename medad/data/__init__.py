"""medad.data: dataset manifests in their public layouts, readers, MONAI transforms and synthetic layouts.

Every dataset kind is one module that registers a :class:`DatasetDescription` (its reader, splits, how ``auto``
recognises it, its class words and synthetic writers); :func:`load_manifest` turns a native layout into the
manifest table described in ``docs/architecture.md``, and nothing downstream reads folders. The names here are
the ones a user calls; the building blocks stay in their modules (``medad.data.mvtec.make_mvtec``,
``medad.data.manifest.COLUMNS``, ...).
"""

from medad.data.checks import check_dataset
from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.hashing import add_sha256
from medad.data.interop import export_dataset, write_jsonl, write_meta_json
from medad.data.nifti import slice_affine, volume_affine
from medad.data.paths import manifest_from_paths
from medad.data.readers import read_image, read_mask
from medad.data.registry import (
    dataset_description,
    dataset_options,
    detect_kind,
    list_datasets,
    list_layouts,
    load_all_splits,
    load_manifest,
    write_layout,
)
from medad.data.transforms import make_dataset, normalize_images

__all__ = [
    "DatasetDescription",
    "Detector",
    "add_sha256",
    "check_dataset",
    "dataset_description",
    "dataset_options",
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
