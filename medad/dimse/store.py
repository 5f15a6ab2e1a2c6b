"""Send a medad export's DICOM SEG / Parametric Map objects (and only those) to a DIMSE peer with C-STORE, and
check a ``--to dicom://`` destination with C-ECHO before any work is done.

The export derives the objects' SOPInstanceUIDs from the source and the result, so storing again (a re-run after
a store that failed halfway) sends the same instances, which a PACS files as the same objects.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pydicom

from medad.dimse.peer import (
    DicomPeer,
    DimseError,
    DimseSettings,
    associated,
    no_response,
    parse_dicom_url,
    status_error,
)
from medad.errors import ExportError

log = logging.getLogger("medad.dimse")

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PMAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _result_objects(files: list[Path]) -> list[pydicom.Dataset]:
    """The files as datasets, refusing anything that is not a SEG or a Parametric Map."""
    found: list[pydicom.Dataset] = []
    for path in files:
        ds = pydicom.dcmread(path)
        if str(ds.SOPClassUID) not in (SEG_STORAGE, PMAP_STORAGE):
            raise ExportError(f"{path.name} is not a DICOM SEG or Parametric Map; medad stores only those with --to")
        found.append(ds)
    return found


def _contexts(objects: list[pydicom.Dataset]) -> list[tuple[str, list[str]]]:
    """One presentation context per SOP class, offering each file's own transfer syntax (and explicit VR LE)."""
    syntaxes: dict[str, set[str]] = {}
    for ds in objects:
        syntaxes.setdefault(str(ds.SOPClassUID), {EXPLICIT_LE}).add(str(ds.file_meta.TransferSyntaxUID))
    return [(uid, sorted(found)) for uid, found in sorted(syntaxes.items())]


def store_files(files: list[Path], url: str, settings: DimseSettings) -> str:
    """C-STORE every file to the peer of ``url``; return the line the CLI prints.

    Raises:
        DimseError: the peer is unreachable, rejects, aborts, times out, refuses SEG / Parametric Map, or answers a
            failure status (objects sent before it stay sent; the same command sends the rest).
    """
    peer = parse_dicom_url(url, study=False)
    objects = _result_objects(files)
    what = "storing a result (C-STORE)"
    with associated(peer, settings, _contexts(objects), "storing results") as assoc:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        missing = sorted({str(ds.SOPClassUID) for ds in objects} - accepted)
        if missing:
            kinds = " and ".join("Parametric Map" if uid == PMAP_STORAGE else "SEG" for uid in missing)
            raise DimseError(
                f"{peer.name} does not accept DICOM {kinds} objects (presentation context rejected); enable those "
                "storage SOP classes in the PACS, or drop them from --format / --export"
            )
        for ds in objects:
            started = time.monotonic()
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1))
            if code == -1:
                raise no_response(peer, settings, what, started)
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
                raise status_error(peer, what, code)
    line = f"stored {len(objects)} DICOM object(s) on {peer.name} (C-STORE)"
    log.info("DIMSE: %s", line)
    return line


def probe_target(url: str, settings: DimseSettings, *, before: str = "scoring") -> DicomPeer:
    """C-ECHO the ``--to`` peer before any work, so a wrong address or AE title, or a dead PACS, is refused first.

    Raises:
        DimseError: the peer is unreachable, rejects the association, times out or does not answer the echo.
    """
    peer = parse_dicom_url(url, study=False)
    what = f"checking the --to destination before {before} (C-ECHO)"
    with associated(peer, settings, [(VERIFICATION, None)], what) as assoc:
        started = time.monotonic()
        status = assoc.send_c_echo()
        code = int(getattr(status, "Status", -1))
        if code == -1:
            raise no_response(peer, settings, what, started)
        if code != 0x0000:
            raise status_error(peer, what, code)
    return peer
