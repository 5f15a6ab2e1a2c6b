"""medad.data: dataset manifests in their public layouts, readers, MONAI transforms and synthetic layouts.

Every dataset module turns a native layout into the manifest table described in ``docs/architecture.md``;
nothing downstream reads folders.
"""

from medad.data.btad import make_btad
from medad.data.clinicdb import make_clinicdb
from medad.data.colondb import make_colondb
from medad.data.dicom import make_dicom, read_dicom_frame
from medad.data.folder import make_folder
from medad.data.hashing import add_sha256
from medad.data.interop import FORMATS, export_dataset, write_jsonl, write_meta_json
from medad.data.isic import make_isic
from medad.data.jsonl import make_jsonl
from medad.data.kvasir import make_kvasir
from medad.data.manifest import CLASS_WORDS, COLUMNS, Problem, mask_rule_for, pair_by_stem
from medad.data.metajson import make_meta_json, read_meta_json
from medad.data.mpdd import make_mpdd
from medad.data.mvtec import make_mvtec
from medad.data.mvtec_style import make_mvtec_style
from medad.data.nifti import make_nifti, slice_affine, volume_affine
from medad.data.readers import binarise, image_shape, read_image, read_mask
from medad.data.registry import (
    KINDS,
    SPLITS,
    check_dataset,
    detect_kind,
    load_all_splits,
    load_manifest,
    manifest_from_paths,
    validate_files,
)
from medad.data.synthetic import LAYOUTS, write_layout
from medad.data.tabular import make_csv
from medad.data.tn3k import make_tn3k
from medad.data.transforms import make_dataset, normalize_images
from medad.data.visa import make_visa

__all__ = [
    "CLASS_WORDS",
    "COLUMNS",
    "FORMATS",
    "KINDS",
    "LAYOUTS",
    "SPLITS",
    "Problem",
    "add_sha256",
    "binarise",
    "check_dataset",
    "detect_kind",
    "export_dataset",
    "image_shape",
    "load_all_splits",
    "load_manifest",
    "make_btad",
    "make_clinicdb",
    "make_colondb",
    "make_csv",
    "make_dataset",
    "make_dicom",
    "make_folder",
    "make_isic",
    "make_jsonl",
    "make_kvasir",
    "make_meta_json",
    "make_mpdd",
    "make_mvtec",
    "make_mvtec_style",
    "make_nifti",
    "make_tn3k",
    "make_visa",
    "manifest_from_paths",
    "mask_rule_for",
    "normalize_images",
    "pair_by_stem",
    "read_dicom_frame",
    "read_image",
    "read_mask",
    "read_meta_json",
    "slice_affine",
    "validate_files",
    "volume_affine",
    "write_jsonl",
    "write_layout",
    "write_meta_json",
]
