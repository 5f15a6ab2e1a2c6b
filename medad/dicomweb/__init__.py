"""DICOMweb in and out: score studies straight from a PACS and send the SEG / Parametric Map results back.

:func:`localise_inputs` turns study / series URLs among ``medad score``'s inputs into local files
(QIDO-RS + WADO-RS via ``dicomweb-client``); :func:`store_export` sends an export's DICOM objects back with
STOW-RS, skipping those the server already holds. Connections, credentials (environment only), TLS and
error messages live in :mod:`medad.dicomweb.client`.
"""

from medad.dicomweb.client import DicomWebError, DicomWebResource, is_dicomweb_url, parse_store_url, parse_study_url
from medad.dicomweb.fetch import cache_folder, fetch_resource, is_image_sop_class, localise_inputs
from medad.dicomweb.store import (
    StoreResult,
    check_store_formats,
    check_target,
    export_dicom_files,
    finished_export,
    probe_target,
    store_export,
    store_files,
)

__all__ = [
    "DicomWebError",
    "DicomWebResource",
    "StoreResult",
    "cache_folder",
    "check_store_formats",
    "check_target",
    "export_dicom_files",
    "fetch_resource",
    "finished_export",
    "is_dicomweb_url",
    "is_image_sop_class",
    "localise_inputs",
    "parse_store_url",
    "parse_study_url",
    "probe_target",
    "store_export",
    "store_files",
]
