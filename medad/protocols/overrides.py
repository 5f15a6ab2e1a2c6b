"""``--set key.path=value``: settings applied to the parsed YAML before validation."""

from __future__ import annotations

from typing import Any

from medad.errors import ConfigError
from medad.protocols.messages import format_loc
from medad.protocols.yamlio import Loc, load_yaml_text


def _item_index(node: list[Any], part: str, assignment: str, loc: list[str | int]) -> int:
    """The list index ``part`` addresses: a number, or the item's ``name``."""
    if part.isdigit() and int(part) < len(node):
        return int(part)
    names = [item.get("name") for item in node if isinstance(item, dict)]
    if part not in names:
        raise ConfigError(
            f"--set {assignment!r}: {format_loc(tuple(loc))} has no item {part!r} "
            f"(use an index 0..{len(node) - 1} or one of the names {names})"
        )
    return names.index(part)


def apply_override(data: dict[str, Any], assignment: str) -> Loc:
    """Apply one ``--set key.path=value`` to the parsed YAML (value parsed as a YAML scalar / flow value).

    List items can be addressed by index (``targets.0.root``) or by their ``name`` (``models.clean.compat``).

    Returns:
        The location that was set.

    Raises:
        ConfigError: for a malformed assignment or a path that does not exist.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r} must look like key.path=value (e.g. training.epochs=3)")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r} has an empty key; write e.g. training.epochs=3")
    value = load_yaml_text(raw, f"--set {assignment}").data
    node: Any = data
    loc: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            idx = _item_index(node, part, assignment, loc)
            loc.append(idx)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            loc.append(part)
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {assignment!r}: {format_loc(tuple(loc))} is a single value, not a section")
    return tuple(loc)
