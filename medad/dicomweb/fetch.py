"""Fetch a DICOMweb study or series into local files (QIDO-RS to list, WADO-RS to retrieve), resumably.

The instances hold patient data, so they go into the score output's ``private/`` folder
(``OUT/private/dicomweb/<key>/``, the key a hash of the URL), named by a hash of their SOPInstanceUID. An
instance already there is not fetched again, so an interrupted fetch resumes. Objects that are not images
(SEG, Parametric Maps, SR, presentation states, ... - among them medad's own results stored back into the
study) are skipped.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom

from medad.dicomweb.client import DicomWebError, DicomWebResource, call, connect, is_dicomweb_url, parse_study_url
from medad.errors import DataError
from medad.utils.io import write_bytes_atomic

log = logging.getLogger("medad.dicomweb")

PRIVATE_DIR = "private"
CACHE_DIR = "dicomweb"

#: SOP classes that carry no image to score (prefixes of the UID); medad's SEG / PMAP results among them.
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, fiducials, segmentation (66.4), surface seg
    "1.2.840.10008.5.1.4.1.1.30",  # parametric map
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA / STL
    "1.2.840.10008.5.1.4.1.1.481.2",  # radiotherapy dose, structure sets, plans, records (RT Image 481.1 is kept)
    "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.4",
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.481.6",
    "1.2.840.10008.5.1.4.1.1.481.7",
    "1.2.840.10008.5.1.4.1.1.481.8",
    "1.2.840.10008.5.1.4.1.1.481.9",
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
)
_SOP_CLASS, _SOP_INSTANCE, _SERIES = "00080016", "00080018", "0020000E"


def _value(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def is_image_sop_class(uid: str) -> bool:
    """Whether instances of this SOP class can hold an image medad scores (not SEG / PMAP / SR / ...)."""
    return not any(uid.startswith(prefix) or uid == prefix.rstrip(".") for prefix in NON_IMAGE_SOP_PREFIXES)


def cache_folder(out_dir: str | Path, resource: DicomWebResource) -> Path:
    """Where the instances of ``resource`` are kept: ``OUT/private/dicomweb/<hash of the URL>``."""
    key = f"{resource.base_url}|{resource.study_uid}|{resource.series_uid or ''}"
    return Path(out_dir) / PRIVATE_DIR / CACHE_DIR / hashlib.sha256(key.encode()).hexdigest()[:16]


def instance_file(folder: Path, sop_instance_uid: str) -> Path:
    """The local file of one instance (named by a hash: no UID in the file name)."""
    return folder / f"{hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:20]}.dcm"


def fetch_resource(resource: DicomWebResource, out_dir: str | Path, ca_bundle: str | Path | None = None) -> Path:
    """Fetch the image instances of one study / series into the cache folder and return that folder.

    Raises:
        DicomWebError: the server cannot be reached, refuses access, lacks the study, or does not speak DICOMweb.
        DataError: the study / series holds no image instances.
    """
    client = connect(resource, ca_bundle)
    server, folder = resource.server, cache_folder(out_dir, resource)
    found = call(
        server,
        "listing the study's instances (QIDO-RS)",
        client.search_for_instances,
        study_instance_uid=resource.study_uid,
        series_instance_uid=resource.series_uid,
        fields=[_SOP_CLASS, _SOP_INSTANCE, _SERIES],
        get_remaining=True,
    )
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise DicomWebError(
            f"the server {server} did not answer the instance search like a DICOMweb service; check that the URL's "
            "root is the server's DICOMweb root (e.g. http://HOST:8042/dicom-web)"
        )
    what = "series" if resource.series_uid else "study"
    if not found:
        raise DicomWebError(
            f"the DICOMweb server {server} has no instances of the {what} in the URL; check its UIDs in the URL"
        )
    wanted = [item for item in found if is_image_sop_class(_value(item, _SOP_CLASS))]
    fetched = kept = 0
    for item in wanted:
        sop, series = _value(item, _SOP_INSTANCE), _value(item, _SERIES) or resource.series_uid or ""
        target = instance_file(folder, sop)
        if target.is_file():
            kept += 1
            continue
        ds = call(
            server,
            "retrieving an instance (WADO-RS)",
            client.retrieve_instance,
            resource.study_uid,
            series,
            sop,
        )
        if not isinstance(ds, pydicom.Dataset) or ("PixelData" not in ds and "FloatPixelData" not in ds):
            continue
        buffer = io.BytesIO()
        try:
            ds.save_as(buffer, enforce_file_format=True)
        except Exception:
            raise DicomWebError(
                f"an instance retrieved from {server} could not be written as a DICOM file; check the server's "
                "copy of the study"
            ) from None
        write_bytes_atomic(target, buffer.getvalue())
        fetched += 1
    images = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if not images:
        raise DataError(
            f"the {what} in the URL on {server} holds no image instances ({len(found)} non-image object(s) such as "
            "SEG / SR); give the URL of a study or series with images"
        )
    log.info("DICOMweb: %d instance(s) fetched, %d already on disk", fetched, kept)
    return folder


def localise_inputs(
    paths: Sequence[str | Path], out_dir: str | Path, ca_bundle: str | Path | None = None
) -> list[str | Path]:
    """Replace every DICOMweb study / series URL among ``paths`` by the local folder of its fetched instances.

    Local paths pass through unchanged, so ``medad score`` takes any mix of files, folders and URLs.
    """
    return [fetch_resource(parse_study_url(p), out_dir, ca_bundle) if is_dicomweb_url(p) else p for p in paths]
