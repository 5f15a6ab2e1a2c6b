"""Paths written in a protocol: ``${VAR}`` environment variables, ``~`` and paths relative to the YAML's folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DATASETS_DOC = "docs/datasets.md"
MODELS_DOC = "docs/models.md"


def env_vars_in(value: str) -> list[str]:
    """Names of the ``${VAR}`` references in ``value``."""
    return _ENV_RE.findall(value)


def resolve_path(value: str, base_dir: Path) -> Path:
    """Expand ``${VAR}`` and ``~``, and make a relative path absolute against ``base_dir``.

    A variable that is not set stays as written (``${MEDAD_DATA}``), for the resource check to report with the
    fix (:func:`unset_vars_in`).

    Args:
        value: the path as written in the protocol.
        base_dir: the protocol file's folder.
    """
    expanded = os.path.expanduser(_ENV_RE.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value))
    path = Path(expanded)
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


def unset_vars_in(value: str) -> list[str]:
    """Names of the ``${VAR}`` references in ``value`` whose variable is not set."""
    return [var for var in env_vars_in(value) if var not in os.environ]
