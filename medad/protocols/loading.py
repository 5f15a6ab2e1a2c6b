"""Loading a protocol: parse the YAML safely, apply ``--set`` overrides, validate the schema and the structure."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError

from medad.errors import ConfigError
from medad.protocols.bundled import locate_protocol, shipped_base_dir
from medad.protocols.messages import format_loc, from_validation_error
from medad.protocols.overrides import apply_override
from medad.protocols.schema import Name, Protocol
from medad.protocols.structure import check_structure
from medad.protocols.yamlio import LoadedYaml, Loc, load_yaml_file

if TYPE_CHECKING:
    from medad.protocols.resolve import ResolvedProtocol


@dataclass
class LoadedProtocol:
    """A validated protocol with its source.

    Attributes:
        protocol: the validated schema object.
        yaml: the parsed YAML (after ``--set`` overrides) with key lines.
        path: the protocol file.
        name: the protocol name (``name:`` or the file stem).
        overrides: the ``--set`` strings applied, by location.
        shipped_base: for a shipped protocol (given by name, or inside the installed package), the folder its
            relative paths resolve against (``./protocols`` of the current folder, so its run goes to ``./runs``);
            ``None``: the protocol file's folder.
    """

    protocol: Protocol
    yaml: LoadedYaml
    path: Path
    name: str
    overrides: dict[Loc, str] = field(default_factory=dict)
    shipped_base: Path | None = None

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against (the protocol file's folder, or ``shipped_base``)."""
        return self.shipped_base or self.path.resolve().parent

    @functools.cached_property
    def resolved(self) -> ResolvedProtocol:
        """The protocol with every path resolved, once: what the structure and resource checks check and what the
        runner runs (:func:`~medad.protocols.resolve.resolve_protocol`)."""
        from medad.protocols.resolve import resolve_protocol  # resolve imports this module

        return resolve_protocol(self)

    def where(self, loc: Loc) -> str:
        """Where a key came from: ``file:line`` or the ``--set`` option that set it (or made it: a key only a
        ``--set`` created, such as ``foo`` of ``--set foo.bar.baz=1``, has no line in the file)."""
        for depth in range(len(loc), 0, -1):
            if loc[:depth] in self.overrides:
                return f"--set {self.overrides[loc[:depth]]}"
        if loc and loc not in self.yaml.lines:
            for origin, assignment in self.overrides.items():
                if origin[: len(loc)] == loc:
                    return f"--set {assignment}"
        return self.yaml.where(loc)

    def error(self, loc: Loc, message: str) -> ConfigError:
        """A ConfigError naming the location and key."""
        return ConfigError(f"{self.where(loc)}: {format_loc(loc)}: {message}")


def _name_from_file(path: Path) -> str:
    """The protocol's name when it has no ``name:``: its file stem, refused when it cannot name a run folder
    (checked here, not first by the resolver, which would fail with a validation traceback)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    try:
        return str(TypeAdapter(Name).validate_python(name))
    except ValidationError:
        raise ConfigError(
            f"{path}: the protocol has no `name:` and its file name gives no valid one ({name[:70]!r}: letters, "
            "digits, _ . -, starting with a letter or digit, at most 64 characters); add e.g. `name: my-study`"
        ) from None


def load_protocol(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedProtocol:
    """Parse and validate a protocol's structure (no file-system checks beyond reading it).

    Args:
        path: the protocol YAML, or the name of a shipped protocol (``demo``; see
            :func:`~medad.protocols.bundled.locate_protocol`).
        overrides: ``key.path=value`` strings applied before validation.

    Returns:
        The validated protocol.

    Raises:
        ConfigError: naming the file, line, key and fix for the first problem.
    """
    path, shipped = locate_protocol(path)
    loaded = load_yaml_file(path)
    if not isinstance(loaded.data, dict):
        raise ConfigError(
            f"{path}: a protocol must be a mapping of keys (models:, targets:, ...); see docs/protocols.md"
        )
    origins = {apply_override(loaded.data, item): item for item in overrides}
    base = shipped_base_dir() if shipped else None
    lp = LoadedProtocol(Protocol.model_construct(), loaded, path, path.stem, origins, base)
    try:
        protocol = Protocol.model_validate(loaded.data)
    except ValidationError as exc:
        raise from_validation_error(exc, lp) from None
    lp.protocol = protocol
    lp.name = protocol.name or _name_from_file(path)
    check_structure(lp)
    return lp
