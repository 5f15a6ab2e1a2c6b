"""Test-only fault injection: run the medad command line with the run display patched to stall.

``python tests/protocols/stall_run.py STAGE:N medad-args...`` runs ``medad medad-args...`` in this process after
patching :meth:`medad.protocols.progress.RunDisplay.advance`: once the stage ``STAGE`` has reported ``N`` units of
work (images for ``score`` and ``evaluate``, epochs for ``train``), the run prints ``medad: stalled ...`` on
stderr and stops responding, holding its locks, so a test can SIGKILL it at a known point mid-stage. Production
code knows nothing of it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from medad.protocols.progress import RunDisplay


def install(stage: str, count: int) -> None:
    """Patch the display to stall once ``stage`` has counted ``count`` units (all its items together)."""
    original = RunDisplay.advance
    counts: dict[str, int] = {}

    def advance(self: RunDisplay, task: object, stage_name: str, units: int = 1) -> None:
        original(self, task, stage_name, units)  # type: ignore[arg-type]
        before = counts.get(stage_name, 0)
        counts[stage_name] = before + units
        if stage_name == stage and before < count <= before + units:
            self.log(f"{stage_name}: stalled after {counts[stage_name]} units (test fault injection)")
            print(f"medad: stalled in stage {stage_name} after {counts[stage_name]} units", file=sys.stderr)
            sys.stderr.flush()
            while True:
                time.sleep(3600)

    RunDisplay.advance = advance  # type: ignore[method-assign]


def command(stall: str, args: list[str]) -> list[str]:
    """The argv of a ``medad`` run that stalls at ``stall`` (``STAGE:N``)."""
    return [sys.executable, str(Path(__file__).resolve()), stall, *args]


if __name__ == "__main__":
    point, *rest = sys.argv[1:]
    name, _, units = point.partition(":")
    install(name, int(units))
    sys.argv = ["medad", *rest]
    from medad.cli import main

    main()
