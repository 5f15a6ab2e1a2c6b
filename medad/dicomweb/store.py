"""Store a medad export's DICOM SEG / Parametric Map objects on a DICOMweb server (STOW-RS), never twice.

Before each STOW the server is asked (QIDO-RS) whether it already holds the object's SOPInstanceUID; the
export writes those UIDs deterministically from the source and the result, so re-running an export or a
store that failed halfway stores only what is missing. De-identified exports are refused: their study and
patient attributes are replaced, so they cannot attach to the source study.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pydicom

from medad.dicomweb.client import DicomWebError, call, connect, parse_store_url
from medad.errors import ExportError

log = logging.getLogger("medad.dicomweb")

DICOM_KINDS = ("seg", "seg_fractional", "pmap")
DEIDENTIFIED_REFUSAL = (
    "--deidentify cannot be combined with a PACS target (--to): a de-identified SEG / Parametric Map no longer "
    "references its study's patient and study, so it cannot attach to it; drop --deidentify to store in the PACS, "
    "or drop --to to write de-identified files for sharing"
)


@dataclasses.dataclass
class StoreResult:
    """What a store did: objects sent, objects the server already held."""

    stored: int = 0
    already_stored: int = 0

    def describe(self) -> str:
        """One line for the CLI."""
        return f"stored {self.stored} DICOM object(s); {self.already_stored} were already on the server"


def export_dicom_files(export_dir: str | Path) -> list[Path]:
    """The DICOM SEG / Parametric Map files of an export folder, from its ``export.json``.

    Raises:
        ExportError: not an export folder, a de-identified export, or one without DICOM objects.
    """
    folder = Path(export_dir)
    record = folder / "export.json"
    if not record.is_file():
        raise ExportError(f"{folder} holds no export.json; give a folder written by `medad export`")
    info = json.loads(record.read_text(encoding="utf-8"))
    if info.get("deidentified"):
        raise ExportError(f"the export in {folder} is de-identified; " + DEIDENTIFIED_REFUSAL)
    files: list[Path] = []
    for case in info.get("cases", []):
        for kind in DICOM_KINDS:
            name = (case.get("volume_files") or {}).get(kind)
            if name and folder / name not in files:
                files.append(folder / name)
    if not files:
        raise ExportError(
            f"the export in {folder} holds no DICOM SEG / Parametric Map objects (DICOM sources exported with "
            "--format dicom-seg and/or pmap); re-export with --format dicom-seg,pmap"
        )
    return files


def store_files(files: list[Path], url: str, ca_bundle: str | Path | None = None) -> StoreResult:
    """STOW-RS every file not already on the server (checked by SOPInstanceUID with QIDO-RS first)."""
    resource = parse_store_url(url)
    client = connect(resource, ca_bundle)
    server = resource.server
    result = StoreResult()
    for path in files:
        ds = pydicom.dcmread(path)
        study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        present = call(
            server,
            "checking whether a result is already stored (QIDO-RS)",
            client.search_for_instances,
            study_instance_uid=study,
            search_filters={"SOPInstanceUID": sop},
        )
        if present:
            result.already_stored += 1
            continue
        response = call(server, "storing a result (STOW-RS)", client.store_instances, [ds], study)
        _check_response(response, server)
        result.stored += 1
    log.info("DICOMweb: %s", result.describe())
    return result


def _check_response(response: Any, server: str) -> None:
    failed = getattr(response, "FailedSOPSequence", None) if response is not None else None
    if failed:
        reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
        raise DicomWebError(
            f"the DICOMweb server {server} rejected a stored object (failure reason {', '.join(reasons)}); check "
            "that it accepts DICOM SEG / Parametric Map objects, then re-run (stored objects are not sent again)"
        )


def store_export(export_dir: str | Path, url: str, ca_bundle: str | Path | None = None) -> StoreResult:
    """Store the DICOM objects of an export folder on a DICOMweb server (what ``medad export --to`` runs)."""
    return store_files(export_dicom_files(export_dir), url, ca_bundle)


def check_target(
    formats: str | None,
    deidentify: bool,
    url: str | None,
    ca_bundle: str | Path | None = None,
    *,
    probe: bool = False,
    before: str = "scoring",
) -> None:
    """Refuse early what a store would refuse late: ``--to`` with ``--deidentify``, or without DICOM formats;
    with ``probe``, also a server that does not answer or does not speak DICOMweb (:func:`probe_target`; ``before``
    names the work the check comes before, for its message: ``"scoring"``, ``"exporting"``).

    Raises:
        ExportError: the combination cannot work.
        DicomWebError: ``probe`` and the server is unreachable, refuses us, times out or is not DICOMweb.
    """
    if url is None:
        return
    parse_store_url(url)
    check_store_formats(formats, deidentify)
    if probe:
        probe_target(url, ca_bundle, before=before)


def check_store_formats(formats: str | None, deidentify: bool) -> None:
    """Refuse a PACS destination (any scheme) with ``--deidentify`` or without a DICOM format.

    Raises:
        ExportError: the combination cannot work.
    """
    if deidentify:
        raise ExportError(DEIDENTIFIED_REFUSAL)
    items = {f.strip().lower() for f in (formats or "").split(",")}
    if not items & {"dicom-seg", "pmap"}:
        raise ExportError(
            "--to stores DICOM SEG / Parametric Map objects; add dicom-seg and/or pmap to --format / --export"
        )


def probe_target(url: str, ca_bundle: str | Path | None = None, *, before: str = "scoring") -> None:
    """Ask the STOW-RS target one cheap QIDO-RS question (one study, one attribute) before any work is done, so
    that a wrong URL, missing credentials or a dead server are refused before the work (scoring, exporting), not
    after it.

    Raises:
        DicomWebError: the server cannot be reached, times out, refuses access or does not answer as DICOMweb.
    """
    resource = parse_store_url(url)
    client = connect(resource, ca_bundle)
    found = call(
        resource.server,
        f"checking the --to destination before {before} (QIDO-RS)",
        client.search_for_studies,
        limit=1,
        fields=["StudyInstanceUID"],
    )
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise DicomWebError(
            f"the server {resource.server} did not answer a study search like a DICOMweb service; check that --to "
            "is the server's DICOMweb root (e.g. http://HOST:8042/dicom-web)"
        )


def finished_export(export_dir: str | Path, formats: str, url: str | None, *, per_file: bool = False) -> Path | None:
    """An export folder a re-run of ``medad score --export ... --to URL`` can store again instead of rewriting.

    Returns the folder when ``url`` is given and the folder holds a finished export (``export.json``, written
    last) of the same formats and the same grouping (``per_file``: one set of objects per file, not per series),
    else None (the export is written again).
    """
    folder = Path(export_dir)
    record = folder / "export.json"
    if url is None or not record.is_file():
        return None
    info = json.loads(record.read_text(encoding="utf-8"))
    wanted = {f.strip().lower() for f in formats.split(",") if f.strip()}
    same = wanted == set(info.get("formats", [])) and bool(info.get("per_file")) == per_file
    return folder if same else None
