"""Protocols: typed YAML studies, their validation, the resumable stage runner and run provenance.

``validate_protocol(path)`` checks a study without running it; ``run_protocol(path)`` runs it (resuming any
finished or interrupted work) and returns the run folder. See ``docs/protocols.md`` and
``docs/reproducibility.md``.

From YAML to jobs: :mod:`~medad.protocols.loading` parses and validates (:mod:`~medad.protocols.schema`,
:mod:`~medad.protocols.structure`, :mod:`~medad.protocols.messages`, :mod:`~medad.protocols.overrides`),
:mod:`~medad.protocols.resources` checks what it needs from disk, :mod:`~medad.protocols.resolve` yields the
typed :class:`~medad.protocols.resolve.ResolvedProtocol` (what is recorded and hashed), and
:mod:`~medad.protocols.runner` runs the stages of :mod:`medad.protocols.stages`.
"""

from medad.protocols.loading import LoadedProtocol, load_protocol
from medad.protocols.resolve import ResolvedProtocol, config_hash, resolve_protocol
from medad.protocols.runner import run_protocol
from medad.protocols.schema import Protocol
from medad.protocols.validate import validate_protocol

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
