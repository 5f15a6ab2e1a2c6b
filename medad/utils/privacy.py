"""Pseudonymous case ids, the ``private/`` folder and log redaction, so patient identifiers never reach logs,
reports, file names or shareable outputs.

Case ids are keyed hashes (HMAC-SHA256) of a source's key (its dataset kind, its path relative to the dataset
root and its frame) under a per-project secret key: without the key an id cannot be reversed by hashing
guessed file names, and two projects with different keys give unrelated ids for the same file name. The key is
``$MEDAD_CASE_ID_KEY`` when set, else the file :func:`key_path` (made once, readable by its owner only); either is
text (UTF-8) of at least :data:`MIN_KEY_LENGTH` characters, and binary bytes are refused with the fix. Share
that file (or the variable) with a collaborator to get the same case ids for the same data (see
``docs/reproducibility.md``).

Every folder medad writes keeps the source paths and names it needs (manifests, the resolved protocol with
real data roots) in one sub-folder named :data:`PRIVATE`; everything else in the folder is shareable.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medad.errors import ConfigError

KEY_ENV = "MEDAD_CASE_ID_KEY"
"""Environment variable holding the case-id key itself (overrides the key file)."""
HOME_ENV = "MEDAD_HOME"
"""Environment variable naming medad's configuration folder (default ``~/.config/medad``)."""
KEY_FILE = "case_id.key"
MIN_KEY_LENGTH = 16
PRIVATE = "private"
"""Name of the one sub-folder of a run or score folder that holds source paths and names (never share it)."""
PATH_COLUMNS: tuple[str, ...] = ("image_path", "mask_path")
"""Manifest columns that hold source paths; blanked in every shareable copy of a manifest."""
PRIVATE_README = (
    "This folder holds the source paths and names of the data medad read (manifests, the protocol with its real\n"
    "data roots). Keep it with the run so that resume, eval and export can find the sources, but never share it:\n"
    "every other file of the run or score folder is shareable.\n"
)

_KEYS: dict[str, bytes] = {}


def key_path() -> Path:
    """Where the case-id key file lives: ``$MEDAD_HOME/case_id.key``, else ``$XDG_CONFIG_HOME/medad/case_id.key``,
    else ``~/.config/medad/case_id.key``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / KEY_FILE
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config).expanduser() if config else Path.home() / ".config"
    return base / "medad" / KEY_FILE


_NEW_KEY = "python -c 'import secrets; print(secrets.token_hex(32))'"


def _checked(key: str, where: str) -> bytes:
    """The key's bytes: text (UTF-8) of at least :data:`MIN_KEY_LENGTH` characters, surrounding blanks dropped.

    Keys are text by design, so the same key works in the file and in the variable: a variable holding bytes
    that are not UTF-8 (kept by Python as lone surrogates) is refused, naming the variable and the fix.
    """
    key = key.strip()
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"the case-id key in {where} holds bytes that are not UTF-8 text; case-id keys are text: set it to a "
            f"text secret, e.g. the output of `{_NEW_KEY}`"
        ) from None
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"the case-id key in {where} has {len(key)} characters; it needs at least {MIN_KEY_LENGTH} "
            f"(delete the file to make a new random key, or set {KEY_ENV} to a longer secret)"
        )
    return encoded


def _create_key_file(path: Path) -> None:
    """Write a fresh random key to ``path`` (owner-only), unless another process made it first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic and refuses to replace: concurrent first runs agree on one key
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def case_id_key() -> bytes:
    """The project's secret case-id key: ``$MEDAD_CASE_ID_KEY``, else the key file (created on first use).

    Raises:
        ConfigError: the key is too short, or the key file cannot be created or read.
    """
    env = os.environ.get(KEY_ENV)
    if env is not None:
        return _checked(env, f"${KEY_ENV}")
    path = key_path()
    cached = _KEYS.get(str(path))
    if cached is not None:
        return cached
    try:
        if not path.is_file():
            _create_key_file(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot create or read the case-id key {path} ({exc.strerror or exc}); set {HOME_ENV} to a writable "
            f"folder, or set {KEY_ENV} to the project's key"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"the case-id key {path} holds binary bytes, not UTF-8 text; case-id keys are text (medad writes 64 hex "
            f"digits): write the project's text key into it (e.g. `{_NEW_KEY} > {path}`), or delete it so medad "
            "makes a new one"
        ) from None
    key = _checked(text, str(path))
    _KEYS[str(path)] = key
    return key


def key_fingerprint() -> str:
    """A short public tag of the case-id key (not the key): equal tags mean two studies' case ids are linkable."""
    return hmac.new(case_id_key(), b"medad case-id key fingerprint", hashlib.sha256).hexdigest()[:12]


def case_id(key: str, salt: str = "") -> str:
    """Return a stable pseudonymous case id (``case-`` + 12 hex digits) for a path or source key.

    The id is HMAC-SHA256 of ``salt`` and ``key`` under :func:`case_id_key`: stable across runs and resumes
    (same key, same id), but it reveals nothing of the file name, which for clinical data can itself hold a
    patient's name or id, and cannot be recomputed from a guessed name without the secret key.
    """
    digest = hmac.new(case_id_key(), f"{salt}\x00{key}".encode(), hashlib.sha256).hexdigest()
    return f"case-{digest[:12]}"


def private_dir(folder: str | Path) -> Path:
    """The ``private/`` sub-folder of a run or score folder, created with a README saying what it holds."""
    out = Path(folder) / PRIVATE
    out.mkdir(parents=True, exist_ok=True)
    readme = out / "README.txt"
    if not readme.is_file():
        readme.write_text(PRIVATE_README, encoding="utf-8")
    return out


def shareable_manifest(manifest: Any) -> Any:
    """A copy of a manifest DataFrame with its source-path columns blanked (ids, labels and classes kept)."""
    out = manifest.copy()
    for column in PATH_COLUMNS:
        if column in out.columns:
            out[column] = ""
    return out


def is_path_like(text: str) -> bool:
    """Whether a word looks like a file or folder path (it holds a folder separator or starts with ``~``)."""
    return os.sep in text or "/" in text or text.startswith("~")


def redact_paths(args: Iterable[str]) -> list[str]:
    """Command-line words with every file or folder path (a word with a folder separator) replaced by ``<path>``
    (also the value of ``key=value`` words); bare file names such as ``demo.yaml`` are kept."""
    out = []
    for arg in args:
        head, sep, value = arg.partition("=")
        if sep and not is_path_like(head) and is_path_like(value):
            out.append(f"{head}=<path>")
        else:
            out.append("<path>" if is_path_like(arg) else arg)
    return out


def placeholder(what: str, name: str | None = None) -> str:
    """A path's stand-in in shareable files, e.g. ``<root of isic>``."""
    return f"<{what}>" if name is None else f"<{what} of {name}>"


class RedactFilter(logging.Filter):
    """A logging filter that replaces given sensitive strings (names, ids, source paths) with ``[redacted]``."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self._pattern: re.Pattern[str] | None = None
        self.update(secrets or [])

    def update(self, secrets: list[str]) -> None:
        """Add strings to redact."""
        words = sorted({s for s in secrets if s and len(s) >= 2}, key=len, reverse=True)
        existing = [self._pattern.pattern] if self._pattern is not None else []
        parts = existing + [re.escape(w) for w in words]
        self._pattern = re.compile("|".join(parts)) if parts else None

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced."""
        return self._pattern.sub("[redacted]", text) if self._pattern is not None else text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = ()
        return True
