"""Find the protocols shipped with medad (``protocols/*.yaml``), in a source checkout or an installed copy.

Search order: the ``MEDAD_PROTOCOLS`` environment variable (a folder), then ``medad/protocols/shipped/``: in a
source checkout a link to the top-level ``protocols/``, in an installed copy the YAMLs themselves (package data:
``pyproject.toml`` ships every ``*.yaml`` under ``medad/``). Notebooks and scripts use :func:`bundled_protocol`
instead of guessing a path.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from medad.errors import ConfigError

ENV_VAR = "MEDAD_PROTOCOLS"


def _candidates() -> list[Path]:
    out = []
    if os.environ.get(ENV_VAR):
        out.append(Path(os.environ[ENV_VAR]).expanduser())
    out.append(Path(str(resources.files("medad"))) / "protocols" / "shipped")
    return out


def bundled_protocols_dir() -> Path:
    """The folder holding the shipped protocol YAMLs.

    Raises:
        ConfigError: none of the searched folders holds ``demo.yaml``; the message lists them and the fix.
    """
    searched = _candidates()
    for folder in searched:
        if (folder / "demo.yaml").is_file():
            return folder
    raise ConfigError(
        f"the protocols shipped with medad were not found (searched {', '.join(str(p) for p in searched)}); set "
        f"{ENV_VAR}=/path/to/medad/protocols (the protocols/ folder of the medad repository) or pass a protocol path"
    )


def bundled_protocol(name: str) -> Path:
    """Path of a shipped protocol by name (``demo`` or ``demo.yaml``).

    Raises:
        ConfigError: the protocols folder is not found, or holds no protocol of that name (the message lists them).
    """
    folder = bundled_protocols_dir()
    path = folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"no shipped protocol named {name!r}; shipped protocols: {names}")
    return path
