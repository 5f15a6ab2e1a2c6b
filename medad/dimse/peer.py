"""DIMSE peers: ``dicom://AET@HOST:PORT[/STUDY_UID]`` URLs, medad's AE title, timeouts, associations, messages.

A message names the peer as ``AET@host:port`` and never a study UID or a patient attribute. medad's own
(calling) AE title comes from ``--calling-aet``, else ``MEDAD_AE_TITLE``, else ``MEDAD``. Timeouts (seconds) come
from the environment: ``MEDAD_DIMSE_CONNECT_TIMEOUT`` (TCP connect, default 10), ``MEDAD_DIMSE_ACSE_TIMEOUT``
(association negotiation, 30), ``MEDAD_DIMSE_TIMEOUT`` (each DIMSE answer, 120) and ``MEDAD_DIMSE_NETWORK_TIMEOUT``
(a silent connection, 600). pynetdicom is imported only when a peer is contacted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medad.errors import MedadError

if TYPE_CHECKING:
    from pynetdicom.association import Association

ENV_AE_TITLE = "MEDAD_AE_TITLE"
DEFAULT_AE_TITLE = "MEDAD"
ENV_TIMEOUTS = {
    "connect": ("MEDAD_DIMSE_CONNECT_TIMEOUT", 10.0),
    "acse": ("MEDAD_DIMSE_ACSE_TIMEOUT", 30.0),
    "dimse": ("MEDAD_DIMSE_TIMEOUT", 120.0),
    "network": ("MEDAD_DIMSE_NETWORK_TIMEOUT", 600.0),
}
SCHEME = "dicom://"
URL_FORM = "dicom://AET@HOST:PORT/STUDY_UID"

_URL = re.compile(
    r"^dicom://(?P<aet>[^@/]*)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d+)(?:/(?P<rest>.*))?$"
)
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


class DimseError(MedadError):
    """A DIMSE peer could not be reached, refused the association, timed out, or answered with a failure."""


def check_ae_title(value: str, what: str) -> str:
    """An AE title as DICOM allows it (1-16 characters, no backslash or control characters, not only spaces)."""
    title = value.strip()
    if not title or len(value) > 16 or "\\" in value or not value.isascii() or not value.isprintable():
        raise DimseError(
            f"{what} {value!r} is not a DICOM AE title; give 1-16 ASCII letters, digits, spaces or _-. (no backslash)"
        )
    return title


@dataclasses.dataclass(frozen=True)
class DicomPeer:
    """A DIMSE peer (its AE title, host and port) and, for inputs, one study in it."""

    aet: str
    host: str
    port: int
    study_uid: str | None = None

    @property
    def name(self) -> str:
        """``AET@host:port``, for messages (holds no UID)."""
        return f"{self.aet}@{self.host}:{self.port}"


def restore_scheme(text: str) -> str:
    """Undo ``pathlib``'s collapse of ``dicom://`` into ``dicom:/`` (typer may hand a URL over as a Path)."""
    if text.startswith("dicom:/") and not text.startswith(SCHEME):
        return SCHEME + text[len("dicom:/") :]
    return text


def is_dicom_url(value: object) -> bool:
    """Whether a command-line argument is a ``dicom://`` URL rather than a local path or an http(s) URL."""
    return str(value).startswith("dicom:/")


def parse_dicom_url(value: str | Path, *, study: bool) -> DicomPeer:
    """Parse ``dicom://AET@HOST:PORT[/STUDY_UID]``; ``study``: an input, which must name a study.

    Raises:
        DimseError: the URL does not have that form (the message says which part is wrong).
    """
    text = restore_scheme(str(value))
    match = _URL.match(text)
    form = URL_FORM if study else "dicom://AET@HOST:PORT"
    if match is None:
        raise DimseError(f"{_without_path(text)!r} is not a DIMSE URL; give {form} (e.g. dicom://PACS@pacs.local:104)")
    aet = check_ae_title(match["aet"], "the called AE title in the DIMSE URL")
    port = int(match["port"])
    host = match["host"].strip("[]")
    if not 0 < port < 65536:
        raise DimseError(f"the port {port} in the DIMSE URL for {aet}@{host} is not 1-65535; give {form}")
    rest = (match["rest"] or "").strip("/")
    peer = DicomPeer(aet, host, port)
    if rest and not (_UID.match(rest) and len(rest) <= 64):
        raise DimseError(f"the path of the DIMSE URL for {peer.name} is not a study UID; give {form}")
    if study and not rest:
        raise DimseError(f"the DIMSE URL for {peer.name} names no study; give {URL_FORM}")
    return dataclasses.replace(peer, study_uid=rest or None)


def _without_path(text: str) -> str:
    """A URL without its path (which may hold a study UID), for messages."""
    if text.startswith(SCHEME):
        return SCHEME + text[len(SCHEME) :].split("/", 1)[0]
    return text.split("/", 1)[0]


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise DimseError(f"{name}={raw!r} is not a positive number of seconds; set it to e.g. {default:g}")
    return value


@dataclasses.dataclass(frozen=True)
class DimseSettings:
    """How medad talks DIMSE: its AE title, the C-MOVE port (None: C-GET) and the timeouts in seconds."""

    calling_aet: str = DEFAULT_AE_TITLE
    move_port: int | None = None
    connect_timeout: float = ENV_TIMEOUTS["connect"][1]
    acse_timeout: float = ENV_TIMEOUTS["acse"][1]
    dimse_timeout: float = ENV_TIMEOUTS["dimse"][1]
    network_timeout: float = ENV_TIMEOUTS["network"][1]

    @classmethod
    def from_env(cls, calling_aet: str | None = None, move_port: int | None = None) -> DimseSettings:
        """Settings from the options, else the environment, else the defaults.

        Raises:
            DimseError: a bad AE title, port or timeout.
        """
        if calling_aet is not None:
            title = check_ae_title(calling_aet, "--calling-aet")
        else:
            title = check_ae_title(os.environ.get(ENV_AE_TITLE) or DEFAULT_AE_TITLE, ENV_AE_TITLE)
        if move_port is not None and not 0 < move_port < 65536:
            raise DimseError(f"--move {move_port} is not a TCP port; give the port (1-65535) the PACS sends C-MOVE to")
        times = {f"{key}_timeout": _float_env(name, default) for key, (name, default) in ENV_TIMEOUTS.items()}
        return cls(calling_aet=title, move_port=move_port, **times)


def make_ae(settings: DimseSettings) -> Any:
    """A pynetdicom ``AE`` with medad's AE title and the timeouts.

    pynetdicom logs every query and answer identifier (study UIDs, and patient attributes in patient-level queries)
    at INFO: its logger is kept to CRITICAL, so a log configured for medad (e.g. an AI node's) never receives them;
    medad reports every DIMSE failure itself.
    """
    from pynetdicom import AE

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    ae = AE(ae_title=settings.calling_aet)
    ae.connection_timeout = settings.connect_timeout
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_pdu_size = 0  # no limit: what the peer sends in one PDU
    return ae


def _unreachable(peer: DicomPeer, settings: DimseSettings, what: str) -> DimseError:
    """Why a TCP connection to the peer failed: nothing listens, no answer, or an unknown host."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=settings.connect_timeout):
            pass
    except ConnectionRefusedError:
        return DimseError(
            f"nothing listens at {peer.name} while {what} (connection refused); check the host and port and that "
            "the PACS's DICOM service is running (a re-run resumes)"
        )
    except socket.gaierror:
        return DimseError(f"the host of {peer.name} is unknown while {what}; check the host name in the dicom:// URL")
    except TimeoutError:
        return DimseError(
            f"{peer.name} did not accept a connection within {settings.connect_timeout:g} s while {what} (a "
            f"timeout); check the host, port and firewall, or raise {ENV_TIMEOUTS['connect'][0]}"
        )
    except OSError as exc:
        return DimseError(f"cannot connect to {peer.name} while {what} ({exc.strerror}); check the host and port")
    return DimseError(f"the connection to {peer.name} was closed while {what}; check the PACS's log and retry")


def _rejected(assoc: Association, peer: DicomPeer, settings: DimseSettings, what: str) -> DimseError:
    """The peer's A-ASSOCIATE-RJ, with pynetdicom's reading of its result, source and reason."""
    answer = assoc.acceptor.primitive
    reason = f"{answer.result_str}, {answer.source_str}: {answer.reason_str}" if answer is not None else "no reason"
    hint = "check the called AE title in the dicom:// URL (the PACS's own AE title)"
    if answer is not None and answer.result == 2:  # rejected transient: busy, or a local limit
        hint = "the PACS is busy or at its limit of associations; retry later"
    elif "Calling AE" in reason:
        hint = f"register medad's AE title {settings.calling_aet} in the PACS (or give --calling-aet / {ENV_AE_TITLE})"
    elif "Called AE" not in reason:
        hint += f" and that the PACS knows medad's AE title {settings.calling_aet}"
    return DimseError(f"{peer.name} rejected the association while {what} ({reason}); {hint}")


@contextlib.contextmanager
def associated(
    peer: DicomPeer,
    settings: DimseSettings,
    contexts: Sequence[tuple[str, Sequence[str] | None]],
    what: str,
    **kwargs: Any,
) -> Iterator[Association]:
    """An established association to ``peer`` proposing ``contexts`` (abstract syntax, transfer syntaxes or None
    for pynetdicom's defaults); released (or aborted) when the block ends. ``kwargs`` go to ``AE.associate``.

    Raises:
        DimseError: the peer is not listening, does not answer in time, rejects or aborts the association.
    """
    from pynetdicom import evt

    ae = make_ae(settings)
    for abstract, syntaxes in contexts:
        if syntaxes is None:
            ae.add_requested_context(abstract)
        else:
            ae.add_requested_context(abstract, list(syntaxes))
    opened: list[bool] = []
    handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, lambda event: opened.append(True))]
    started = time.monotonic()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        ae.shutdown()
        raise _not_established(assoc, bool(opened), time.monotonic() - started, peer, settings, what)
    try:
        yield assoc
    except RuntimeError:  # what pynetdicom raises on a request over an association the peer has since aborted
        if assoc.is_established:
            raise
        raise aborted(peer, settings, what) from None
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def require_context(assoc: Association, abstract_syntax: str, peer: DicomPeer, what: str, fix: str) -> None:
    """Refuse an association on which the peer did not accept the service ``abstract_syntax`` (pynetdicom would
    raise a ValueError on the request)."""
    if not any(str(cx.abstract_syntax) == abstract_syntax for cx in assoc.accepted_contexts):
        from pydicom.uid import UID

        raise DimseError(f"{peer.name} does not offer {UID(abstract_syntax).name} while {what}; {fix}")


def _not_established(
    assoc: Association, connected: bool, elapsed: float, peer: DicomPeer, settings: DimseSettings, what: str
) -> DimseError:
    if assoc.is_rejected:
        return _rejected(assoc, peer, settings, what)
    if not connected:
        return _unreachable(peer, settings, what)
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        from pydicom.uid import UID

        names = ", ".join(sorted({UID(str(cx.abstract_syntax)).name for cx in assoc.rejected_contexts}))
        return DimseError(
            f"{peer.name} accepted none of the services medad asked for while {what} ({names}); enable them for "
            f"medad's AE title {settings.calling_aet} in the PACS"
        )
    if elapsed >= settings.acse_timeout * 0.95:
        return DimseError(
            f"{peer.name} accepted the connection but did not accept the association within "
            f"{settings.acse_timeout:g} s while {what} (a timeout: it may not be a DICOM service, or be busy); check "
            f"the port is the PACS's DICOM port, retry later, or raise {ENV_TIMEOUTS['acse'][0]}"
        )
    return DimseError(
        f"{peer.name} aborted the association request while {what}; check that the PACS allows medad's AE title "
        f"{settings.calling_aet} and the PACS's log"
    )


def no_response(peer: DicomPeer, settings: DimseSettings, what: str, started: float) -> DimseError:
    """A DIMSE request that got no answer: the peer aborted or closed the association, or the DIMSE timeout hit."""
    if time.monotonic() - started >= settings.dimse_timeout * 0.95:
        return DimseError(
            f"{peer.name} did not answer within {settings.dimse_timeout:g} s while {what} (a timeout: it is "
            f"reachable but busy or hung); retry later or raise {ENV_TIMEOUTS['dimse'][0]} (a re-run resumes)"
        )
    return aborted(peer, settings, what)


def aborted(peer: DicomPeer, settings: DimseSettings, what: str) -> DimseError:
    """The peer aborted (or closed) an established association."""
    return DimseError(
        f"{peer.name} aborted the association while {what}; check that the PACS allows medad's AE title "
        f"{settings.calling_aet} (its list of modalities / permissions), its storage and its log, then retry (a re-run "
        "resumes)"
    )


def status_error(peer: DicomPeer, what: str, status: int) -> DimseError:
    """A DIMSE failure status, with pynetdicom's category of the code (the peer's comment may hold UIDs: left out)."""
    from pynetdicom.status import code_to_category

    return DimseError(
        f"{peer.name} answered status 0x{status:04X} ({code_to_category(status)}) while {what}; check the PACS's log "
        "and its permissions for medad's AE title, then retry"
    )
