"""Protocols: typed YAML studies, their validation, the resumable stage runner and run provenance.

``validate_protocol(path)`` checks a study without running it; ``run_protocol(path)`` runs it (resuming any
finished or interrupted work) and returns the run folder. See ``docs/protocols.md`` and
``docs/reproducibility.md``.
"""

from medad.protocols.runner import run_protocol
from medad.protocols.schema import Protocol
from medad.protocols.validate import LoadedProtocol, load_protocol, validate_protocol

__all__ = ["LoadedProtocol", "Protocol", "load_protocol", "run_protocol", "validate_protocol"]
