"""Fetch a study from a DIMSE peer into local files: C-FIND lists its series and their instances, then C-GET (on
medad's own association: no listening port) or C-MOVE (the peer connects back to medad's Storage SCP on
``--move PORT``; the peer must know medad's AE title, host and that port) retrieves the image series.

The instances hold patient data, so they go into ``OUT/private/dimse/<key>/`` (the key a hash of the peer and
the study), named by a hash of their SOPInstanceUID, like the DICOMweb fetch. A series whose instances are all
there already is not retrieved again, so an interrupted fetch resumes. Series that hold no image (SEG, SR,
presentation states, RT, ... - among them medad's own results stored back into the study) are skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medad.dicomweb.fetch import instance_file, is_image_sop_class
from medad.dimse.peer import (
    DicomPeer,
    DimseError,
    DimseSettings,
    associated,
    no_response,
    require_context,
    status_error,
)
from medad.errors import DiskError, as_medad_error
from medad.utils.io import write_bytes_atomic

log = logging.getLogger("medad.dimse")

PRIVATE_DIR = "private"
CACHE_DIR = "dimse"
#: Modalities of series that hold no image medad scores (its own SEG / Parametric Map results among them).
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "PR", "KO", "REG", "RWV", "DOC", "FID", "PLAN", "AU", "ECG", "HD", "RESP", "SMR", "RTSTRUCT"}
    | {"RTPLAN", "RTDOSE", "RTRECORD", "RTION", "RTTREAT", "OT_SEG"}
)
_PENDING = (0xFF00, 0xFF01)
_FIND, _GET, _MOVE = (
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.3",  # - GET
    "1.2.840.10008.5.1.4.1.2.2.2",  # - MOVE
)


@dataclasses.dataclass
class _Series:
    """One image series of the study: its UID and the SOPInstanceUIDs C-FIND listed in it."""

    uid: str
    instances: list[str]


def cache_folder(out_dir: str | Path, peer: DicomPeer) -> Path:
    """Where the instances of ``peer``'s study are kept: ``OUT/private/dimse/<hash of the peer and study>``."""
    key = f"{peer.aet}|{peer.host}|{peer.port}|{peer.study_uid}"
    return Path(out_dir) / PRIVATE_DIR / CACHE_DIR / hashlib.sha256(key.encode()).hexdigest()[:16]


def image_storage_classes() -> list[str]:
    """The storage SOP classes pynetdicom knows that can hold an image medad scores (fewer than 127)."""
    from pynetdicom import StoragePresentationContexts

    return [
        str(cx.abstract_syntax) for cx in StoragePresentationContexts if is_image_sop_class(str(cx.abstract_syntax))
    ]


def _query(level: str, **keys: object) -> Any:
    from pydicom import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def _find(assoc: Any, peer: DicomPeer, settings: DimseSettings, query: Any, what: str) -> list[Any]:
    """The identifiers a C-FIND answers with; a failure status, an abort or a timeout raise."""
    found: list[Any] = []
    started = time.monotonic()
    for status, identifier in assoc.send_c_find(query, _FIND):
        code = int(getattr(status, "Status", -1))
        if code == -1:
            raise no_response(peer, settings, what, started)
        if code in _PENDING:
            if identifier is not None:
                found.append(identifier)
        elif code != 0x0000:
            raise status_error(peer, what, code)
    return found


def _image_series(assoc: Any, peer: DicomPeer, settings: DimseSettings) -> list[_Series]:
    """C-FIND the study's series, then the instances of those that may hold images."""
    what = "listing the study's series (C-FIND)"
    series = _find(
        assoc,
        peer,
        settings,
        _query("SERIES", StudyInstanceUID=peer.study_uid, SeriesInstanceUID="", Modality=""),
        what,
    )
    if not series:
        raise DimseError(f"{peer.name} has no series of the study in the URL; check its StudyInstanceUID")
    wanted: list[_Series] = []
    for item in series:
        if str(item.get("Modality", "")).upper() in NON_IMAGE_MODALITIES or not item.get("SeriesInstanceUID"):
            continue
        uid = str(item.SeriesInstanceUID)
        query = _query(
            "IMAGE", StudyInstanceUID=peer.study_uid, SeriesInstanceUID=uid, SOPInstanceUID="", SOPClassUID=""
        )
        instances = _find(assoc, peer, settings, query, "listing a series' instances (C-FIND)")
        sops = [str(i.SOPInstanceUID) for i in instances if i.get("SOPInstanceUID") and _image_class(i)]
        if sops:
            wanted.append(_Series(uid, sops))
    if not wanted:
        raise DimseError(
            f"the study in the URL on {peer.name} has no image series ({len(series)} series of SEG / SR / other "
            "non-image objects); give the StudyInstanceUID of a study with images"
        )
    return wanted


def _image_class(identifier: Any) -> bool:
    """Whether a C-FIND instance answer may be an image (a peer that leaves SOPClassUID empty: assume so)."""
    sop_class = str(identifier.get("SOPClassUID", "") or "")
    return not sop_class or is_image_sop_class(sop_class)


class _Receiver:
    """The C-STORE handler of a C-GET / C-MOVE: writes each image instance into the cache folder once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = 0
        self.failure: Exception | None = None

    def __call__(self, event: Any) -> int:
        sop_class = str(event.request.AffectedSOPClassUID)
        target = instance_file(self.folder, str(event.request.AffectedSOPInstanceUID))
        if not is_image_sop_class(sop_class) or target.is_file():
            return 0x0000
        try:
            write_bytes_atomic(target, bytes(event.encoded_dataset()))
        except (OSError, DiskError) as exc:  # a full disk: refuse the instance, report after the retrieve
            self.failure = self.failure or exc
            return 0xA700  # out of resources
        self.written += 1
        return 0x0000


def _retrieve_status(assoc: Any, peer: DicomPeer, settings: DimseSettings, responses: Iterator[Any], what: str) -> int:
    """Follow a C-GET / C-MOVE's responses; return the number of failed sub-operations of its final status."""
    started = time.monotonic()
    failed = 0
    for status, _identifier in responses:
        code = int(getattr(status, "Status", -1))
        if code == -1:
            raise no_response(peer, settings, what, started)
        if code in _PENDING:
            continue
        failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        if code == 0xA801:
            raise DimseError(
                f"{peer.name} does not know medad's AE title {settings.calling_aet} as a C-MOVE destination (status "
                f"0xA801); register {settings.calling_aet} with this host and port {settings.move_port} in the PACS "
                "(Orthanc: DicomModalities), or drop --move to fetch with C-GET"
            )
        if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
            raise status_error(peer, what, code)
    return failed


@contextlib.contextmanager
def _storage_scp(settings: DimseSettings, receiver: _Receiver) -> Iterator[None]:
    """medad's Storage SCP for C-MOVE, on ``settings.move_port`` (all interfaces) while the block runs."""
    from pynetdicom import evt

    from medad.dimse.peer import make_ae

    ae = make_ae(settings)
    for uid in image_storage_classes():
        ae.add_supported_context(uid)
    try:
        server = ae.start_server(("", settings.move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver)])
    except OSError as exc:
        raise DimseError(
            f"medad cannot listen on port {settings.move_port} for C-MOVE ({exc.strerror}); give --move a free port "
            "that the PACS is configured to send to"
        ) from None
    try:
        yield
    finally:
        server.shutdown()


def _retriever(assoc: Any, peer: DicomPeer, settings: DimseSettings) -> Callable[[Any], Iterator[Any]]:
    """C-GET (default) or C-MOVE to medad's own AE title (``--move``) of one identifier."""
    if settings.move_port is None:
        return lambda query: assoc.send_c_get(query, _GET)
    return lambda query: assoc.send_c_move(query, settings.calling_aet, _MOVE)


def _require_services(assoc: Any, peer: DicomPeer, settings: DimseSettings) -> None:
    """The peer accepted the query and the retrieve medad asks for (else a message says how to fetch instead)."""
    what = "fetching a study"
    require_context(assoc, _FIND, peer, what, "enable C-FIND (Study Root) for medad's AE title in the PACS")
    if settings.move_port is None:
        fix = "fetch with C-MOVE instead (--move PORT, the PACS must know medad's AE title, host and that port)"
        require_context(assoc, _GET, peer, what, fix)
    else:
        require_context(assoc, _MOVE, peer, what, "drop --move to fetch with C-GET, or enable C-MOVE in the PACS")


def _contexts(settings: DimseSettings) -> list[tuple[str, None]]:
    if settings.move_port is not None:
        return [(_FIND, None), (_MOVE, None)]
    return [(_FIND, None), (_GET, None)] + [(uid, None) for uid in image_storage_classes()]


def fetch_study(peer: DicomPeer, out_dir: str | Path, settings: DimseSettings) -> Path:
    """Fetch the image series of ``peer``'s study into the cache folder and return that folder.

    Raises:
        DimseError: the peer is unreachable, rejects, aborts, times out, answers a failure, lacks the study or
            holds no image series in it.
        DiskError: an instance could not be written.
    """
    from pynetdicom import build_role, evt

    folder = cache_folder(out_dir, peer)
    receiver = _Receiver(folder)
    extra: dict[str, Any] = {}
    if settings.move_port is None:  # C-GET: the peer sends the instances on this association, medad as SCP
        extra["ext_neg"] = [build_role(uid, scp_role=True) for uid in image_storage_classes()]
        extra["evt_handlers"] = [(evt.EVT_C_STORE, receiver)]
    how = "C-MOVE" if settings.move_port is not None else "C-GET"
    scp = _storage_scp(settings, receiver) if settings.move_port is not None else contextlib.nullcontext()
    failed = kept = 0
    with scp, associated(peer, settings, _contexts(settings), "fetching a study", **extra) as assoc:
        _require_services(assoc, peer, settings)
        retrieve = _retriever(assoc, peer, settings)
        for series in _image_series(assoc, peer, settings):
            if all(instance_file(folder, sop).is_file() for sop in series.instances):
                kept += len(series.instances)
                continue
            query = _query("SERIES", StudyInstanceUID=peer.study_uid, SeriesInstanceUID=series.uid)
            failed += _retrieve_status(assoc, peer, settings, retrieve(query), f"retrieving a series ({how})")
    if receiver.failure is not None:
        raise as_medad_error(receiver.failure) or DimseError(f"an instance from {peer.name} could not be written")
    images = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if not images:
        raise DimseError(
            f"{peer.name} sent no image of the study ({failed} failed {how} sub-operation(s)); check that it may "
            f"send to medad's AE title {settings.calling_aet} and the PACS's log"
        )
    log.info("DIMSE: %d instance(s) fetched, %d already on disk, %d failed", receiver.written, kept, failed)
    return folder
