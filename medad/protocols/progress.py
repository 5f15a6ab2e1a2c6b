"""Progress display of a protocol run (rich: stage, dataset, bar, ETA) and the run log.

The display writes to stderr so that a run's last line on stdout is its folder. Every unit of work a stage
reports goes through :meth:`RunDisplay.advance`, which is also where the ``MEDAD_STALL_AT`` fault hook lives:
``MEDAD_STALL_AT=score:3`` makes the run stop responding after the third unit of the ``score`` stage (it prints
``medad: stalled ...`` on stderr and sleeps), so tests can kill it (SIGKILL) at a known point mid-stage and
check that the resumed run ends with the same results.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

STALL_ENV = "MEDAD_STALL_AT"


def _stall_point() -> tuple[str, int] | None:
    value = os.environ.get(STALL_ENV, "")
    stage, _, count = value.partition(":")
    return (stage, int(count)) if stage and count.isdigit() else None


class RunDisplay:
    """Progress bars per stage and item, plus a timestamped log file.

    Args:
        log_path: the run log (appended; created with its folder).
        enabled: show rich progress bars on stderr.
    """

    def __init__(self, log_path: Path | None = None, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold cyan]{task.fields[stage]:<8}"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self.log_path = log_path
        self.counts: dict[str, int] = {}
        self.stall = _stall_point()

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def log(self, message: str) -> None:
        """Append a timestamped line to the run log (timestamps live only here and in provenance)."""
        if self.log_path is None:
            return
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")

    def task(self, stage: str, item: str, total: int | None) -> TaskID:
        """Add a bar for ``stage`` / ``item`` (a dataset, a model) with ``total`` units."""
        self.log(f"{stage} {item}: start")
        return self.progress.add_task(item, total=total, stage=stage)

    def advance(self, task: TaskID, stage: str, units: int = 1) -> None:
        """Count ``units`` of work done in ``stage`` (and stall here if ``MEDAD_STALL_AT`` says so)."""
        self.progress.advance(task, units)
        before = self.counts.get(stage, 0)
        self.counts[stage] = before + units
        if self.stall is not None and self.stall[0] == stage and before < self.stall[1] <= before + units:
            self.log(f"{stage}: stalled after {self.counts[stage]} units ({STALL_ENV})")
            print(f"medad: stalled in stage {stage} after {self.counts[stage]} units ({STALL_ENV})", file=sys.stderr)
            sys.stderr.flush()
            while True:
                time.sleep(3600)

    def finish(self, task: TaskID, stage: str, item: str, reused: bool) -> None:
        """Complete a bar and log whether the work was done now or reused from the stage store."""
        state = next(t for t in self.progress.tasks if t.id == task)
        self.progress.update(
            task, completed=state.total or state.completed, description=f"{item} ({'reused' if reused else 'done'})"
        )
        self.log(f"{stage} {item}: {'reused' if reused else 'done'}")
