"""What a ``medad watch`` node is told: where to listen and store, which model, which studies, how many at once.

Credentials never pass through here: they come from the environment (``MEDAD_DICOMWEB_*``, read by
:mod:`medad.dicomweb.client`) or from a ``--credentials`` file loaded into those variables by
:func:`load_credentials`, so no setting, state row, log line or output ever holds them.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from medad.dicomweb.client import (
    ENV_CA_BUNDLE,
    ENV_PASSWORD,
    ENV_PASSWORD_FILE,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ENV_USER,
)
from medad.dimse.peer import DimseSettings, is_dicom_url
from medad.dimse.remote import Connection
from medad.engine.request import ScoreSettings
from medad.errors import ConfigError, MedadError
from medad.export.thresholds import check_threshold_spec

CREDENTIAL_NAMES = (ENV_USER, ENV_PASSWORD, ENV_PASSWORD_FILE, ENV_TOKEN, ENV_TOKEN_FILE, ENV_CA_BUNDLE)


class WatchError(MedadError):
    """The node cannot follow its source or use its state folder (exit 2, nothing already done is lost)."""


@dataclasses.dataclass(frozen=True)
class StudyFilter:
    """Which series of a study the node scores: by Modality, BodyPartExamined and SOP class (empty: any)."""

    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, modalities: str | None, body_parts: str | None, sop_classes: str | None) -> StudyFilter:
        """From the comma-separated ``--modality``, ``--body-part`` and ``--sop-class`` values (case-insensitive
        for modality and body part)."""
        return cls(_words(modalities, upper=True), _words(body_parts, upper=True), _words(sop_classes, upper=False))

    def describe(self) -> dict[str, list[str]]:
        """The filter as JSON (part of the settings the result UIDs are derived from)."""
        return {
            "modality": sorted(self.modalities),
            "body_part": sorted(self.body_parts),
            "sop_class": sorted(self.sop_classes),
        }


def _words(value: str | None, *, upper: bool) -> frozenset[str]:
    words = [w.strip() for w in (value or "").split(",") if w.strip()]
    return frozenset(w.upper() if upper else w for w in words)


@dataclasses.dataclass(frozen=True)
class WatchSettings:
    """Everything a node needs, except credentials (see the module docstring)."""

    source: str
    to: str
    state_dir: Path
    checkpoint: Path | None = None
    model_name: str | None = None
    backbone_weights: str | None = None
    text_weights: str | None = None
    dicomweb: str | None = None
    formats: str = "dicom-seg,pmap"
    threshold: str = "fixed:0.5"
    score: ScoreSettings = dataclasses.field(default_factory=ScoreSettings)
    study_filter: StudyFilter = dataclasses.field(default_factory=StudyFilter)
    workers: int = 1
    queue: int = 100
    poll: float = 10.0
    once: bool = False
    backlog: bool = False
    ca_bundle: str | None = None
    calling_aet: str | None = None

    @property
    def connection(self) -> Connection:
        """How ``--to`` is reached: the CA bundle (DICOMweb) and, for a ``dicom://`` peer, medad's AE title and the
        DIMSE timeouts (``--calling-aet``, else the environment; see :mod:`medad.dimse.peer`)."""
        return Connection(self.ca_bundle, DimseSettings.from_env(self.calling_aet) if is_dicom_url(self.to) else None)

    @property
    def dicomweb_root(self) -> str:
        """Where studies are fetched from: ``--dicomweb``, else Orthanc's plug-in root ``SOURCE/dicom-web``."""
        return self.dicomweb or f"{self.source.rstrip('/')}/dicom-web"

    def check(self) -> None:
        """Refuse numbers no node can run with, before anything is built or read."""
        for key, flag, low in (("workers", "--workers", 1), ("queue", "--queue", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{flag} {getattr(self, key)} must be >= {low}; pass e.g. {flag} {max(low, 1)}")
        if not self.poll > 0:
            raise ConfigError(f"--poll {self.poll} must be a positive number of seconds; pass e.g. --poll 10")
        rule, rest = check_threshold_spec(self.threshold)
        if rule in ("f1", "youden") and not rest:
            raise ConfigError(
                f"--threshold {self.threshold} picks the cut on the scored images' own labels, and a PACS study has "
                f"none; give fixed:V, percentile:P:NORMALS_PRED_DIR or {rule}:VAL_PRED_DIR (labelled validation "
                "predictions)"
            )
        self.score.check()


def load_credentials(path: str | Path) -> list[str]:
    """Load ``NAME=VALUE`` lines of a credentials file into the process environment; return the names set.

    The names are those of the environment (``MEDAD_DICOMWEB_USER`` / ``_PASSWORD`` / ``_TOKEN`` /
    ``_CA_BUNDLE``, ``..._FILE``), so the same file serves as a systemd ``EnvironmentFile=``. Blank lines and
    ``#`` comments are skipped. The file must be readable by its owner only.

    Raises:
        ConfigError: the file is missing, readable by others, or holds a line that is not a known ``NAME=VALUE``
            (named by its line number; a value is never repeated in a message).
    """
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read the credentials file {file} ({why}); give a readable text file") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the credentials file {file} is readable by other users; run `chmod 600 {file}`")
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, value = text.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not sep or name not in CREDENTIAL_NAMES:
            raise ConfigError(
                f"line {number} of the credentials file {file} is not NAME=VALUE with NAME one of "
                f"{', '.join(CREDENTIAL_NAMES)}; fix that line"
            )
        found[name] = value.strip().strip("'\"")
    os.environ.update(found)
    return sorted(found)
