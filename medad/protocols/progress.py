"""Progress display of a protocol run (medad's one bar style, :mod:`medad.utils.progress`) and the run log.

The display writes to stderr so that a run's last line on stdout is its folder. Every unit of work a stage
reports goes through :meth:`RunDisplay.advance`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import TaskID

from medad.utils import progress as bars


class RunDisplay:
    """Progress bars per stage and item, plus a timestamped log file.

    Args:
        log_path: the run log (appended; created with its folder).
        enabled: show rich progress bars on stderr.
    """

    def __init__(self, log_path: Path | None = None, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.progress = bars.make_progress(enabled, self.console)  # the style `medad score`'s bar has too
        self.log_path = log_path

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
        """Count ``units`` of work done in ``stage`` (an item's bar)."""
        self.progress.advance(task, units)

    def finish(self, task: TaskID, stage: str, item: str, reused: bool) -> None:
        """Complete a bar and log whether the work was done now or reused from the stage store."""
        state = next(t for t in self.progress.tasks if t.id == task)
        self.progress.update(
            task, completed=state.total or state.completed, description=f"{item} ({'reused' if reused else 'done'})"
        )
        self.log(f"{stage} {item}: {'reused' if reused else 'done'}")
