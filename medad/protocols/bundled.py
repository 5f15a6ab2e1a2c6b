"""Find the protocols shipped with medad (``protocols/*.yaml``), in a source checkout or an installed copy.

Search order: the ``MEDAD_PROTOCOLS`` environment variable (a folder), then ``medad/protocols/shipped/``: in a
source checkout a link to the top-level ``protocols/``, in an installed copy the YAMLs themselves (package data:
``pyproject.toml`` ships every ``*.yaml`` under ``medad/``). Notebooks and scripts use :func:`bundled_protocol`
instead of guessing a path.

The command line takes a shipped protocol by name (``medad run demo``, :func:`locate_protocol`). A shipped
protocol's relative paths (``output: ../runs``) resolve as if it sat in ``./protocols/`` of the current folder, as
in a checkout: its run goes to ``./runs``, never inside the installed package.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml

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


def _package_dir() -> Path:
    return Path(str(resources.files("medad"))).resolve()


def shipped_base_dir() -> Path:
    """The folder a shipped protocol's relative paths resolve against: ``./protocols`` of the current folder, so
    that ``output: ../runs`` gives ``./runs`` (as ``medad run protocols/demo.yaml`` does in a checkout)."""
    return Path.cwd().absolute() / "protocols"


def locate_protocol(value: str | Path) -> tuple[Path, bool]:
    """The protocol file a user named, and whether it is a shipped protocol (run from the current folder).

    ``value`` is a YAML path, or the name of a shipped protocol (``demo``, ``demo.yaml``) when no such file
    exists. A file inside the installed package is a shipped protocol too.

    Raises:
        ConfigError: no file of that path and no shipped protocol of that name; the message says where the shipped
            protocols are when ``value`` names one (``protocols/demo.yaml`` outside a checkout).
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path, path.resolve().is_relative_to(_package_dir())
    try:
        folder = bundled_protocols_dir()
    except ConfigError:
        return path, False  # no shipped protocols to offer: the reader says what is wrong with the path
    shipped = folder / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if path.name == str(value) and shipped.is_file():  # a bare name: the shipped protocol
        return shipped, True
    if path.exists():  # e.g. a folder: the reader says it cannot be read
        return path, False
    if shipped.is_file():
        raise ConfigError(
            f"protocol file {value} does not exist here; medad ships a protocol of that name: give its name "
            f"instead, e.g. `medad run {shipped.stem}` (the shipped protocols are in {folder}; `medad protocols` "
            "lists them)"
        )
    names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
    raise ConfigError(
        f"protocol file {value} does not exist; check the path, or give the name of a shipped protocol ({names})"
    )


def shipped_protocols() -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped protocol, by name (what ``medad protocols`` lists).

    Raises:
        ConfigError: the shipped protocols are not found (see :func:`bundled_protocols_dir`).
    """
    out = []
    for path in sorted(bundled_protocols_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        description = data.get("description", "") if isinstance(data, dict) else ""
        out.append((path.stem, " ".join(str(description).split())))
    return out
