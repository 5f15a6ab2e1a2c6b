"""DIMSE in and out: score a study straight from a PACS's DICOM port and send the SEG / Parametric Map back.

:func:`fetch_study` lists a ``dicom://AET@HOST:PORT/STUDY_UID`` study's series with C-FIND and retrieves its image
series with C-GET (or C-MOVE to medad's Storage SCP with ``--move PORT``) into ``OUT/private/``; :func:`store_files`
sends results with C-STORE; :func:`probe_target` checks a destination with C-ECHO. :mod:`medad.dimse.remote` is the
one dispatch on the URL scheme (DICOMweb or DIMSE) that ``medad score`` and ``--to`` use. AE titles, timeouts and
messages live in :mod:`medad.dimse.peer`.
"""

from medad.dimse.fetch import cache_folder, fetch_study
from medad.dimse.peer import DicomPeer, DimseError, DimseSettings, is_dicom_url, parse_dicom_url
from medad.dimse.remote import Connection, check_target, is_remote_url, localise_inputs, store_export
from medad.dimse.store import probe_target, store_files

__all__ = [
    "Connection",
    "DicomPeer",
    "DimseError",
    "DimseSettings",
    "cache_folder",
    "check_target",
    "fetch_study",
    "is_dicom_url",
    "is_remote_url",
    "localise_inputs",
    "parse_dicom_url",
    "probe_target",
    "store_export",
    "store_files",
]
