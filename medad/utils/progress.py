"""medad's one progress-bar style (rich, on stderr): stage, item, bar, done/total, elapsed time and ETA.

``medad run``'s display (:class:`medad.protocols.progress.RunDisplay`) and ``medad score``'s bar
(:func:`track`, used by every scoring strategy) are built from :func:`make_progress`, so both commands look
alike. Bars go to stderr: a command's stdout stays for its result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def make_progress(enabled: bool = True, console: Console | None = None) -> Progress:
    """A rich ``Progress`` in medad's style; each task carries a ``stage`` field (``score``, ``train``, ...)."""
    return Progress(
        TextColumn("[bold cyan]{task.fields[stage]:<8}"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def track(
    items: Iterable[T],
    stage: str,
    item: str,
    total: int | None,
    *,
    enabled: bool = True,
    units: Callable[[T], int] = lambda _: 1,
) -> Iterator[T]:
    """Yield ``items`` while one bar counts ``units(x)`` per element (after the consumer is done with it).

    Args:
        items: what to iterate (e.g. a DataLoader).
        stage: the stage column (``score``).
        item: what is counted (``images``).
        total: the number of units expected, or ``None``.
        enabled: show the bar; ``False`` just yields.
        units: how many units one element stands for (e.g. the images of a batch), read before it is yielded.
    """
    with make_progress(enabled) as progress:
        task = progress.add_task(item, total=total, stage=stage)
        for element in items:
            done = units(element)
            yield element
            progress.advance(task, done)
