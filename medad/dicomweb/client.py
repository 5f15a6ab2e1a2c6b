"""DICOMweb connections: URL parsing, credentials from the environment, TLS, timeouts, retries, error messages.

Credentials never come from the command line and never reach a message or a log: HTTP basic from
``MEDAD_DICOMWEB_USER`` + ``MEDAD_DICOMWEB_PASSWORD`` (or ``MEDAD_DICOMWEB_PASSWORD_FILE``), or a bearer token
from ``MEDAD_DICOMWEB_TOKEN`` (or ``MEDAD_DICOMWEB_TOKEN_FILE``). TLS certificates are verified (a private CA
bundle via ``--ca-bundle`` or ``MEDAD_DICOMWEB_CA_BUNDLE``). Messages name the server (scheme, host, port and
path up to the DICOMweb root) and never a study's UIDs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from pydicom.errors import InvalidDicomError
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from medad.errors import MedadError

T = TypeVar("T")

ENV_USER = "MEDAD_DICOMWEB_USER"
ENV_PASSWORD = "MEDAD_DICOMWEB_PASSWORD"
ENV_PASSWORD_FILE = "MEDAD_DICOMWEB_PASSWORD_FILE"
ENV_TOKEN = "MEDAD_DICOMWEB_TOKEN"
ENV_TOKEN_FILE = "MEDAD_DICOMWEB_TOKEN_FILE"
ENV_CA_BUNDLE = "MEDAD_DICOMWEB_CA_BUNDLE"
ENV_TIMEOUT = "MEDAD_DICOMWEB_TIMEOUT"
ENV_RETRIES = "MEDAD_DICOMWEB_RETRIES"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3

_RESOURCE = re.compile(r"^(?P<base>.+?)/studies/(?P<study>[0-9.]+)(?:/series/(?P<series>[0-9.]+))?/?$")


class DicomWebError(MedadError):
    """A DICOMweb server could not be reached, refused us, or answered with something that is not DICOM."""


@dataclasses.dataclass(frozen=True)
class DicomWebResource:
    """A DICOMweb service root and, for inputs, one study (and optionally one series) in it."""

    base_url: str
    study_uid: str | None = None
    series_uid: str | None = None

    @property
    def server(self) -> str:
        """The service root, for messages (holds no UIDs)."""
        return self.base_url


def is_dicomweb_url(value: object) -> bool:
    """Whether a command-line path argument is an ``http(s)://`` URL rather than a local path."""
    text = str(value)
    return text.startswith(("http://", "https://", "http:/", "https:/"))


def _restore_scheme(text: str) -> str:
    """Undo ``pathlib``'s collapse of ``http://`` into ``http:/`` (typer may hand a URL over as a Path)."""
    for scheme in ("http", "https"):
        if text.startswith(f"{scheme}:/") and not text.startswith(f"{scheme}://"):
            return f"{scheme}://{text[len(scheme) + 2 :]}"
    return text


def _check_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomWebError(f"{text!r} is not an http(s) DICOMweb URL; give http(s)://HOST[:PORT]/PATH")
    if parts.username or parts.password:
        raise DicomWebError(
            f"the DICOMweb URL for {parts.hostname} carries credentials; remove them from the URL and set "
            f"{ENV_USER} + {ENV_PASSWORD} (or {ENV_TOKEN}) in the environment instead"
        )
    if parts.query or parts.fragment:
        raise DicomWebError(f"the DICOMweb URL for {parts.hostname} has a query or fragment; drop the part after ?/#")
    return text.rstrip("/")


def parse_study_url(value: str | Path) -> DicomWebResource:
    """Parse ``http(s)://HOST[:PORT]/ROOT/studies/<StudyUID>[/series/<SeriesUID>]``.

    Raises:
        DicomWebError: the URL names no study.
    """
    text = _check_url(_restore_scheme(str(value)))
    match = _RESOURCE.match(text)
    if match is None:
        raise DicomWebError(
            f"the DICOMweb URL on {urlsplit(text).hostname} names no study; give "
            "http(s)://HOST:PORT/dicom-web/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]"
        )
    return DicomWebResource(match["base"], match["study"], match["series"])


def parse_store_url(value: str) -> DicomWebResource:
    """Parse a STOW-RS target: the DICOMweb root (a study URL is accepted; its root is used)."""
    text = _check_url(_restore_scheme(str(value)))
    match = _RESOURCE.match(text)
    return DicomWebResource(match["base"] if match else text)


def _read_secret(env_file: str) -> str:
    path = Path(os.environ[env_file]).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DicomWebError(
            f"cannot read the file named by {env_file} ({exc.strerror or type(exc).__name__}); "
            "point it at a readable file holding only the secret"
        ) from None


def _auth_header(session: requests.Session) -> None:
    """Attach basic or bearer credentials from the environment (see the module docstring)."""
    token = os.environ.get(ENV_TOKEN) or (_read_secret(ENV_TOKEN_FILE) if os.environ.get(ENV_TOKEN_FILE) else "")
    user = os.environ.get(ENV_USER, "")
    if token and user:
        raise DicomWebError(f"both {ENV_TOKEN}(_FILE) and {ENV_USER} are set; set only one kind of credentials")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
        return
    if user:
        password = os.environ.get(ENV_PASSWORD)
        if password is None and os.environ.get(ENV_PASSWORD_FILE):
            password = _read_secret(ENV_PASSWORD_FILE)
        if password is None:
            raise DicomWebError(f"{ENV_USER} is set but no password; set {ENV_PASSWORD} or {ENV_PASSWORD_FILE}")
        session.auth = (user, password)


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise DicomWebError(f"{name}={raw!r} is not a non-negative number; set it to seconds (timeout) or a count")
    return value


def make_session(ca_bundle: str | Path | None = None) -> tuple[requests.Session, float]:
    """A requests session with credentials, TLS verification, and retries of failed connections and 502/503/504.

    Returns:
        The session and the per-request timeout in seconds.
    """
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credentials or proxy settings behind the user's back
    bundle = ca_bundle or os.environ.get(ENV_CA_BUNDLE)
    if bundle:
        if not Path(bundle).is_file():
            raise DicomWebError(f"CA bundle {bundle} does not exist; give a PEM file with --ca-bundle")
        session.verify = str(bundle)
    else:
        session.verify = True
    retries = int(_float_env(ENV_RETRIES, DEFAULT_RETRIES))
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.5,
        status_forcelist=(502, 503, 504),
        allowed_methods=None,  # STOW is safe to retry: medad checks for stored instances before storing
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    _auth_header(session)
    return session, _float_env(ENV_TIMEOUT, DEFAULT_TIMEOUT)


def connect(resource: DicomWebResource, ca_bundle: str | Path | None = None) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for the resource's service root."""
    from dicomweb_client.api import DICOMwebClient

    session, timeout = make_session(ca_bundle)
    client = DICOMwebClient(resource.base_url, session=session, timeout=timeout)
    # dicomweb-client's own retry loop retries every exception 5 times with 2-16 s waits (30 s for a refused
    # connection); the session's urllib3 retries (MEDAD_DICOMWEB_RETRIES, short backoff) are used instead
    client.set_http_retry_params(retry=False)
    return client


def _status_message(status: int, server: str, what: str) -> str:
    if status in (401, 403):
        return (
            f"the DICOMweb server {server} refused access (HTTP {status}) while {what}; set {ENV_USER} + "
            f"{ENV_PASSWORD} (or {ENV_TOKEN} / {ENV_TOKEN_FILE}) to an account allowed to read and store there"
        )
    if status == 404:
        return (
            f"the DICOMweb server {server} has no such resource (HTTP 404) while {what}; check the study / series "
            "UIDs in the URL and that the URL's root is the server's DICOMweb root (e.g. .../dicom-web)"
        )
    return f"the DICOMweb server {server} answered HTTP {status} while {what}; check the server's log and retry"


@contextlib.contextmanager
def translated(server: str, what: str) -> Iterator[None]:
    """Turn network, HTTP and decoding failures inside the block into one :class:`DicomWebError`."""
    try:
        yield
    except DicomWebError:
        raise
    except requests.exceptions.SSLError:
        raise DicomWebError(
            f"TLS certificate verification failed for {server} while {what}; give the server's CA bundle with "
            f"--ca-bundle or {ENV_CA_BUNDLE}"
        ) from None
    except requests.exceptions.Timeout:
        raise DicomWebError(_timeout_message(server, what)) from None
    except requests.exceptions.ConnectionError as exc:
        if _timed_out(exc):  # urllib3 gave up retrying reads that timed out: the server never answered
            raise DicomWebError(_timeout_message(server, what)) from None
        raise DicomWebError(
            f"cannot reach the DICOMweb server {server} while {what}; check the host and port and that the "
            "server is running (a re-run resumes where this one stopped)"
        ) from None
    except requests.exceptions.RetryError:
        raise DicomWebError(
            f"the DICOMweb server {server} kept failing (HTTP 5xx) while {what}; retry later (a re-run resumes)"
        ) from None
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise DicomWebError(_status_message(status, server, what)) from None
    except (ValueError, KeyError, TypeError, AttributeError, InvalidDicomError, requests.RequestException) as exc:
        # what dicomweb-client raises on an answer that is not DICOM JSON / multipart DICOM
        raise DicomWebError(
            f"the server {server} did not answer like a DICOMweb service while {what} ({type(exc).__name__}); "
            "check that the URL's root is the server's DICOMweb root (e.g. http://HOST:8042/dicom-web)"
        ) from None


def _timed_out(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether a connection error is urllib3's "max retries" over reads or connects that timed out."""
    reason = getattr(exc.args[0], "reason", None) if exc.args and isinstance(exc.args[0], MaxRetryError) else None
    return isinstance(reason, Urllib3Timeout) and not isinstance(reason, NewConnectionError)  # refused: not a timeout


def _timeout_message(server: str, what: str) -> str:
    """A server that accepted the connection (or never completed it) but sent no answer within the timeout."""
    seconds = _float_env(ENV_TIMEOUT, DEFAULT_TIMEOUT)
    return (
        f"the DICOMweb server {server} did not answer within {seconds:g} s while {what} (a timeout: it is reachable "
        f"but busy or hung); check the server, retry later, or raise {ENV_TIMEOUT} (seconds; a re-run resumes)"
    )


def call(server: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with failures turned into one :class:`DicomWebError` (see :func:`translated`)."""
    with translated(server, what):
        return fn(*args, **kwargs)
