"""A PACS named by a URL, whatever it speaks: the one dispatch on the URL scheme that ``medad score`` inputs and
``--to`` destinations go through (``http(s)://``: DICOMweb, ``dicom://``: DIMSE).

Each scheme gives the same four things: fetch a study into ``OUT/private/``, check a destination, probe it before
the work, and store an export's SEG / Parametric Map objects there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from medad.dicomweb.client import DicomWebError, is_dicomweb_url, parse_store_url, parse_study_url
from medad.dicomweb.fetch import fetch_resource
from medad.dicomweb.store import check_store_formats, export_dicom_files
from medad.dicomweb.store import probe_target as probe_web_target
from medad.dicomweb.store import store_files as store_web_files
from medad.dimse.fetch import fetch_study
from medad.dimse.peer import DimseSettings, is_dicom_url, parse_dicom_url
from medad.dimse.store import probe_target, store_files


@dataclasses.dataclass(frozen=True)
class Connection:
    """What talking to a PACS needs besides its URL: the DICOMweb CA bundle and the DIMSE settings."""

    ca_bundle: str | Path | None = None
    dimse: DimseSettings | None = None

    @property
    def dimse_settings(self) -> DimseSettings:
        """The DIMSE settings given, else those of the environment."""
        return self.dimse if self.dimse is not None else DimseSettings.from_env()


@dataclasses.dataclass(frozen=True)
class Scheme:
    """How one kind of PACS URL is fetched from, checked, probed and stored to."""

    name: str
    matches: Callable[[object], bool]
    fetch: Callable[[str, Path, Connection], Path]
    parse_target: Callable[[str], object]
    probe: Callable[[str, Connection, str], object]
    store: Callable[[list[Path], str, Connection], str]


def _web_fetch(url: str, out_dir: Path, conn: Connection) -> Path:
    return fetch_resource(parse_study_url(url), out_dir, conn.ca_bundle)


def _web_store(files: list[Path], url: str, conn: Connection) -> str:
    return store_web_files(files, url, conn.ca_bundle).describe()


SCHEMES = (
    Scheme(
        name="DICOMweb",
        matches=is_dicomweb_url,
        fetch=_web_fetch,
        parse_target=parse_store_url,
        probe=lambda url, conn, before: probe_web_target(url, conn.ca_bundle, before=before),
        store=_web_store,
    ),
    Scheme(
        name="DIMSE",
        matches=is_dicom_url,
        fetch=lambda url, out_dir, conn: fetch_study(parse_dicom_url(url, study=True), out_dir, conn.dimse_settings),
        parse_target=lambda url: parse_dicom_url(url, study=False),
        probe=lambda url, conn, before: probe_target(url, conn.dimse_settings, before=before),
        store=lambda files, url, conn: store_files(files, url, conn.dimse_settings),
    ),
)


def scheme_of(value: object) -> Scheme | None:
    """The scheme of a PACS URL, or None for a local path."""
    return next((scheme for scheme in SCHEMES if scheme.matches(value)), None)


def is_remote_url(value: object) -> bool:
    """Whether an input or destination is a PACS URL (any scheme) rather than a local path."""
    return scheme_of(value) is not None


def localise_inputs(paths: Sequence[str | Path], out_dir: str | Path, conn: Connection) -> list[str | Path]:
    """Replace every PACS study URL among ``paths`` by the local folder of its fetched instances."""
    local: list[str | Path] = []
    for path in paths:
        scheme = scheme_of(path)
        local.append(path if scheme is None else scheme.fetch(str(path), Path(out_dir), conn))
    return local


def _target_scheme(url: str) -> Scheme:
    scheme = scheme_of(url)
    if scheme is None:
        raise DicomWebError(
            f"--to {url!r} is not a PACS URL; give a DICOMweb root (http(s)://HOST:PORT/dicom-web) or a DIMSE peer "
            "(dicom://AET@HOST:PORT)"
        )
    return scheme


def check_target(
    formats: str | None,
    deidentify: bool,
    url: str | None,
    conn: Connection,
    *,
    probe: bool = False,
    before: str = "scoring",
) -> None:
    """Refuse early what a store would refuse late (``--to`` with ``--deidentify`` or without DICOM formats, a bad
    URL); with ``probe``, also a destination that does not answer (QIDO-RS for DICOMweb, C-ECHO for DIMSE).

    Raises:
        ExportError: the combination cannot work.
        MedadError: the URL is malformed, or ``probe`` and the destination is unreachable or refuses us.
    """
    if url is None:
        return
    scheme = _target_scheme(url)
    scheme.parse_target(url)
    check_store_formats(formats, deidentify)
    if probe:
        scheme.probe(url, conn, before)


def store_export(export_dir: str | Path, url: str, conn: Connection) -> str:
    """Store the SEG / Parametric Map objects of an export folder at ``url``; return the line the CLI prints."""
    return _target_scheme(url).store(export_dicom_files(export_dir), url, conn)
