"""Result UIDs that a redo of a study gives again: derived from the study, the model and the node's settings.

The export names its SEG / Parametric Map objects by their source instance and content. A node that is killed
mid-study and redoes it must store *the same* instances even if the redo's scores differ in the last bit (another
device, another thread count), so before storing the node gives every result object a SeriesInstanceUID and
SOPInstanceUID fixed by the StudyInstanceUID, the model fingerprint (card and trainable weights), the node's
settings, the object's kind and the source instances it references (pydicom's ``generate_uid(entropy_srcs=...)``).
The store then sees which objects the PACS already holds and sends only the rest.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

from medad.utils.io import canonical_json, write_bytes_atomic


def fingerprint(model_card: Mapping[str, Any], weights_sha256: str, settings: Mapping[str, Any]) -> str:
    """The sha256 of what decides a result: the model card, its trainable weights' hash and the settings."""
    text = canonical_json({"card": dict(model_card), "weights_sha256": weights_sha256, "settings": dict(settings)})
    return hashlib.sha256(text.encode()).hexdigest()


def referenced_instances(ds: pydicom.Dataset) -> list[str]:
    """The SOPInstanceUIDs of the source images a SEG / Parametric Map references (sorted)."""
    found = {
        str(item.ReferencedSOPInstanceUID)
        for series in ds.get("ReferencedSeriesSequence", [])
        for item in series.get("ReferencedInstanceSequence", [])
    }
    return sorted(found)


def object_kind(ds: pydicom.Dataset) -> str:
    """What a result object is (SOP class and, for a SEG, binary or fractional)."""
    return f"{ds.SOPClassUID}|{ds.get('SegmentationType', '')}"


def result_uids(study_uid: str, node_fingerprint: str, ds: pydicom.Dataset) -> tuple[str, str]:
    """The (SeriesInstanceUID, SOPInstanceUID) the node gives one result object."""
    parts = [study_uid, node_fingerprint, object_kind(ds), *referenced_instances(ds)]
    return generate_uid(entropy_srcs=[*parts, "series"]), generate_uid(entropy_srcs=[*parts, "instance"])


def assign_result_uids(files: Sequence[Path], study_uid: str, node_fingerprint: str) -> list[str]:
    """Rewrite each result file with its deterministic UIDs (idempotent); return the SOPInstanceUIDs."""
    uids: list[str] = []
    for path in files:
        ds = pydicom.dcmread(path)
        series, instance = (pydicom.uid.UID(u) for u in result_uids(study_uid, node_fingerprint, ds))
        if (ds.SeriesInstanceUID, ds.SOPInstanceUID) != (series, instance):
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = instance
            ds.file_meta.MediaStorageSOPInstanceUID = instance
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            write_bytes_atomic(path, buffer.getvalue())
        uids.append(str(instance))
    return uids
