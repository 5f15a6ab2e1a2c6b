"""Test-only fault injection: run ``medad watch`` with the store of one study patched to stall halfway.

``python tests/watch/stall_watch.py N medad-args...`` runs ``medad medad-args...`` in this process after patching
``medad.watch.study.store_files``: the N-th study's store sends only its first result object, prints
``medad: stalled ...`` on stderr and stops responding, so a test can SIGKILL the node mid-study, with part of the
study's results already in the PACS. Production code knows nothing of it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import medad.watch.study as study


def install(nth: int) -> None:
    """Patch the node's store so that the ``nth`` call stores one object and then stalls."""
    original = study.store_files
    calls = [0]

    def store_files(files: list[Path], url: str, ca_bundle: Any = None) -> Any:
        calls[0] += 1
        if calls[0] != nth:
            return original(files, url, ca_bundle)
        original(files[:1], url, ca_bundle)
        print(f"medad: stalled in study {nth} after storing 1 of {len(files)} results", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)

    study.store_files = store_files  # type: ignore[assignment]


def command(nth: int, args: list[str]) -> list[str]:
    """The argv of a ``medad`` run whose ``nth`` study stalls mid-store."""
    return [sys.executable, str(Path(__file__).resolve()), str(nth), *args]


if __name__ == "__main__":
    point, *rest = sys.argv[1:]
    install(int(point))
    sys.argv = ["medad", *rest]
    from medad.cli import main

    main()
