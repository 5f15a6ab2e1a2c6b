"""Paths written in a protocol: ``${VAR}`` environment variables, ``~`` and paths relative to the YAML's folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from medad.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DATASETS_DOC = "docs/datasets.md"
MODELS_DOC = "docs/models.md"


def env_vars_in(value: str) -> list[str]:
    """Names of the ``${VAR}`` references in ``value``."""
    return _ENV_RE.findall(value)


def resolve_path(value: str, base_dir: Path, *, strict: bool = True) -> Path:
    """Expand ``${VAR}`` and ``~``, and make a relative path absolute against ``base_dir``.

    Args:
        value: the path as written in the protocol.
        base_dir: the protocol file's folder.
        strict: raise when a variable is unset; otherwise leave ``${VAR}`` in place.

    Raises:
        ConfigError: when ``strict`` and a referenced environment variable is not set.
    """

    def sub(match: re.Match[str]) -> str:
        var = match.group(1)
        if var in os.environ:
            return os.environ[var]
        if strict:
            raise ConfigError(f"environment variable {var} is not set; export {var}=/path (see {DATASETS_DOC})")
        return match.group(0)

    expanded = os.path.expanduser(_ENV_RE.sub(sub, value))
    path = Path(expanded)
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))
