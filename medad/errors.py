"""User-facing errors.

Every mistake a user can make (a wrong path, a broken image, an unknown YAML key, missing weights) is raised
as a :class:`MedadError` whose message names the offending file or key and says how to fix it. The CLI turns
it into one line on stderr and exit code 2; library callers can catch it.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import TextIO


class MedadError(Exception):
    """A problem with the user's input that they can fix; the message names the thing and the fix."""

    exit_code = 2


class DataError(MedadError):
    """A dataset, image, mask or manifest problem."""


class ConfigError(MedadError):
    """A protocol, configuration or command-line value problem."""


class WeightsError(MedadError):
    """Missing, gated, unreadable or mismatched model weights or checkpoints."""


class ExportError(MedadError):
    """An export could not be written (size mismatch, missing DICOM attributes, unwritable folder)."""


class DataWarning(UserWarning):
    """A file was read, but something in it was repaired or assumed (NaN voxels, a non-binary mask): the message
    names the file and what was done."""


class DiskError(MedadError):
    """An output could not be written: the disk is full, a file-size limit was hit, or the folder is read-only."""


_DISK_FIXES: dict[int, str] = {
    errno.ENOSPC: "the disk holding {path} is full: free space and rerun; finished stages are kept",
    errno.EDQUOT: "the disk quota for {path} is used up: free space or raise the quota and rerun; finished stages "
    "are kept",
    errno.EFBIG: "{path} hit the file-size limit (ulimit -f or the file system's largest file): raise the limit or "
    "write to another disk and rerun; finished stages are kept",
    errno.EROFS: "{path} is on a read-only file system: give an output folder on a writable disk and rerun",
    errno.EACCES: "{path} cannot be written (permission denied): give an output folder you can write to, or fix "
    "its permissions, and rerun",
    errno.EPERM: "{path} cannot be written (operation not permitted): give an output folder you can write to and rerun",
}


def disk_error(exc: OSError, path: object = None) -> DiskError | None:
    """The :class:`DiskError` for a write that failed with a full disk, a file-size limit or a read-only or
    forbidden folder (``None`` for any other ``OSError``); ``path`` defaults to the file the error names."""
    fix = _DISK_FIXES.get(exc.errno or -1)
    if fix is None:
        return None
    return DiskError(fix.format(path=path if path is not None else (exc.filename or "the output")))


def as_medad_error(exc: BaseException) -> MedadError | None:
    """The user error behind ``exc``, if any: itself, a :class:`MedadError` wrapped by a library (MONAI's
    ``apply_transform`` re-raises every transform error as ``RuntimeError``), or a disk-full / read-only
    ``OSError`` turned into a :class:`DiskError`; ``None`` when it is a real bug that should trace."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MedadError):
            return current
        if isinstance(current, OSError) and (found := disk_error(current)) is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


RANDOM_WEIGHTS_WARNING = (
    "model {name!r} has RANDOM WEIGHTS ({parts}); its scores test "
    "the pipeline only and say nothing about the method"
)
"""The one wording of the random-weights warning, for training and scoring alike (see :func:`warn_once`)."""

_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Print ``warning: <message>`` on stderr once per process: a study that trains and scores the same model
    several times (per seed, per target) says it once, not once per stage."""
    import sys

    if message in _WARNED:
        return
    _WARNED.add(message)
    print(f"warning: {printable(message)}", file=sys.stderr)


def forget_warnings() -> None:
    """Let :func:`warn_once` say each warning again: a new command (``medad.cli.main`` called again in one
    process, as notebooks and tests do) says its own warnings."""
    _WARNED.clear()


def printable(message: object) -> str:
    """``message`` as text any terminal can take: undecodable path bytes (lone surrogates) shown as escapes."""
    return str(message).encode("utf-8", "backslashreplace").decode("utf-8")


@contextlib.contextmanager
def show_data_warnings() -> Iterator[None]:
    """Within the block, print every :class:`DataWarning` once as one ``warning: <message>`` line on stderr (the
    CLI's format), leaving other warnings to Python's display; the previous warning settings come back after."""
    import sys
    import warnings

    with warnings.catch_warnings():
        default = warnings.showwarning
        warnings.simplefilter("default", DataWarning)

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if issubclass(category, DataWarning):  # through tqdm, so a progress bar does not share the line
                from tqdm.auto import tqdm

                tqdm.write(f"warning: {printable(message)}", file=sys.stderr if file is None else file)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
