"""A dataset kind's reader options from the command line (``--data-option KEY=VALUE``).

Protocols pass a reader's keywords as a dataset's ``options:`` mapping; the CLI passes the same keywords as
repeated ``KEY=VALUE`` items, each VALUE read as a YAML scalar (``axis=2`` is an int, ``medical=true`` a bool, a
path stays a string), so one option means the same in both. :func:`check_reader_options` refuses a key the kind's
reader does not take before any model is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medad.errors import ConfigError

FLAG = "--data-option"
_SCALARS = (str, int, float, bool, type(None))


def _value(item: str, text: str) -> Any:
    """``text`` read as a YAML scalar, or a flat list of scalars (what a protocol's ``options:`` holds)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{FLAG} {item}: the value is not valid YAML; quote it or fix its brackets") from None
    flat = isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value)
    if not (isinstance(value, _SCALARS) or flat):
        raise ConfigError(f"{FLAG} {item}: the value must be a scalar or a list of scalars, e.g. classes=[a, b]")
    return value


def parse_reader_options(items: Sequence[str], taken: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The reader options of ``--data-option KEY=VALUE`` items (VALUE parsed as a YAML scalar).

    Args:
        items: The ``KEY=VALUE`` items, in the order given.
        taken: Keys the command already sets by another option, with that option's name (e.g. ``{"split":
            "--split", "masks": "--masks-dir"}``): giving one again is refused.

    Returns:
        ``{key: value}``.

    Raises:
        ConfigError: An item without ``=`` or a key, a key given twice or already set by another option, or a
            value that is not a YAML scalar.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{FLAG} {item!r} is not KEY=VALUE; write e.g. {FLAG} masks=/data/masks")
        if key in options:
            raise ConfigError(f"{FLAG} {key} is given twice; keep one {FLAG} {key}=...")
        if taken and key in taken:
            raise ConfigError(f"{FLAG} {key}=... and {taken[key]} both set the reader option {key!r}; drop one")
        options[key] = _value(item, text)
    return options


def check_reader_options(root: str | Path, kind: str, options: Mapping[str, Any]) -> None:
    """Refuse options the reader of ``kind`` does not take (``auto``: of the kind detected at ``root``).

    Called before any work, so that a misspelt key costs no model build; :func:`medad.data.load_manifest` makes
    the same check.

    Raises:
        DataError: An unknown key (the message names it, the kind and the keys the kind takes), an unknown kind,
            or (``auto``) a root that is no known layout.
    """
    if not options:
        return
    from medad.data.registry import check_options

    check_options(root, kind, dict(options))
