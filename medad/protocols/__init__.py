"""Protocols: typed YAML studies, their validation, the resumable stage runner and run provenance.

``validate_protocol(path)`` checks a study without running it; ``run_protocol(path)`` runs it (resuming any
finished or interrupted work) and returns the run folder. See ``docs/protocols.md`` and
``docs/reproducibility.md``.

From YAML to jobs: :mod:`~medad.protocols.loading` parses and validates (:mod:`~medad.protocols.schema`,
:mod:`~medad.protocols.structure`, :mod:`~medad.protocols.messages`, :mod:`~medad.protocols.overrides`),
:mod:`~medad.protocols.resolve` yields the typed :class:`~medad.protocols.resolve.ResolvedProtocol` (what is
recorded and hashed), :mod:`~medad.protocols.resources` checks what it needs from disk, and
:mod:`~medad.protocols.runner` runs the stages of :mod:`medad.protocols.stages`.

Names are imported on first use (PEP 562), so ``medad validate`` (which needs only the loading and checking
modules) does not load torch, which the runner's stages need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medad.protocols.loading import LoadedProtocol, load_protocol
    from medad.protocols.resolve import ResolvedProtocol, config_hash, resolve_protocol
    from medad.protocols.runner import run_protocol
    from medad.protocols.schema import Protocol
    from medad.protocols.validate import validate_protocol

_MODULE_OF = {
    "LoadedProtocol": "loading",
    "load_protocol": "loading",
    "ResolvedProtocol": "resolve",
    "config_hash": "resolve",
    "resolve_protocol": "resolve",
    "run_protocol": "runner",
    "Protocol": "schema",
    "validate_protocol": "validate",
}

__all__ = [
    "LoadedProtocol",
    "Protocol",
    "ResolvedProtocol",
    "config_hash",
    "load_protocol",
    "resolve_protocol",
    "run_protocol",
    "validate_protocol",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its submodule on first access."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'medad.protocols' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medad.protocols.{module}"), name)
    globals()[name] = value
    return value
