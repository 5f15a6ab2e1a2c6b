"""Output folders: refuse ones that cannot be written early, and lock them so two runs never write one at once.

A :class:`FolderLock` is an OS lock (``fcntl.flock``) on a small lock file. The kernel releases it when the
holding process ends in any way (exit, exception, ``kill -9``, a crash), so a dead run never leaves a folder
stuck. The lock file also records who holds it (pid, host, start time, sub-command), so a second run can say
which run it is waiting for, or refuse with that information.

Without ``wait`` the second run exits with :class:`FolderBusyError` (exit 2) at once; with ``wait`` it prints
one line saying which run holds the folder and blocks until that run ends (optionally up to a timeout).

A command refused before any work (an unknown model, a missing input, no GPU) leaves nothing behind: on release,
a lock whose folder holds nothing but the lock file it made removes that file and the folders it made.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from medad.errors import MedadError

LOCK_NAME = ".medad.lock"
"""The lock file kept inside a locked folder (run folders, ``medad score --out`` folders)."""


class FolderBusyError(MedadError):
    """Another live medad process holds the lock of the folder this one needs."""


class OutputPathError(MedadError):
    """An output path that cannot become a folder (it is a file, lies under a file, or cannot be written)."""


def check_output_folder(path: str | Path, what: str, fix: str) -> Path:
    """Refuse, before any work, an output path that cannot be a writable folder; return it resolved.

    Args:
        path: the folder to write into (it may not exist yet).
        what: what the path is, for the message (e.g. ``--out``, ``output:`` at ``study.yaml:3``).
        fix: how to fix it, appended to the message.

    Raises:
        OutputPathError: the path is an existing file, lies under a file, or its nearest existing folder
            cannot be written.
    """
    folder = Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{what} {folder} is an existing file, not a folder; {fix}")
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise OutputPathError(f"{what} {folder}: {probe} is a broken symbolic link; {fix}")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{what} {folder} lies under {probe}, which is a file, not a folder; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {folder}: the folder {probe} cannot be written by this user; {fix}")
    return folder


def _command() -> str:
    """``medad run`` / ``medad score``: the program and its sub-command only (arguments may be patient paths)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    sub = next((a for a in sys.argv[1:] if a.isidentifier()), "")
    return f"{program} {sub}".strip()


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another medad process (it has not recorded itself yet)"
    command = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}{command}"


class FolderLock:
    """An exclusive, crash-safe lock on one output folder (a context manager).

    Args:
        lock_file: the lock file (created with its parent folders if missing). It is deleted only by the process
            that made it, on release, when the folder holds nothing else; a process that was waiting for it then
            sees that its file is gone and locks the new one.
        what: the folder's description for messages (e.g. ``run folder runs/demo/3f...``).
        wait: ``False``: refuse at once when another process holds it; ``True``: wait until it is free;
            a number: wait at most that many seconds, then refuse.
        fix: the advice of the refusal (how to wait or pick another folder).
        poll_s: how often a timed wait retries.

    Raises:
        FolderBusyError: (on entering) the folder is held by another live process and waiting is off or
            timed out.
    """

    def __init__(
        self,
        lock_file: str | Path,
        what: str,
        *,
        wait: bool | float = False,
        fix: str = "wait for it to finish (or rerun with --wait), or write to another folder",
        poll_s: float = 0.2,
    ) -> None:
        self.lock_file = Path(lock_file)
        self.what = what
        self.wait = wait
        self.fix = fix
        self.poll_s = poll_s
        self._fd: int | None = None
        self._made: list[Path] = []  # the folders and lock file this lock created, outermost first

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """What the current holder recorded (empty when unreadable or not yet written)."""
        try:
            return dict(json.loads(self.lock_file.read_text(encoding="utf-8") or "{}"))
        except (OSError, ValueError, TypeError):
            return {}

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise OutputPathError(
                f"cannot lock {self.what} ({os.strerror(exc.errno or 0)}): its file system does not support "
                "file locks; write to a local folder or one on a file system with flock (see docs/protocols.md)"
            ) from None
        return True

    def _open(self) -> int:
        """Open the lock file, creating it and its folders if missing (remembered in ``_made``)."""
        missing = [p for p in (self.lock_file.parent, *self.lock_file.parent.parents) if not p.exists()]
        try:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            self._made = [p for p in reversed(missing) if p.is_dir()]
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self._made.append(self.lock_file)
            except FileExistsError:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputPathError(
                f"cannot create the lock file of {self.what} ({exc.strerror}); make the folder writable or "
                "write to another one"
            ) from None
        return fd

    def _still_linked(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``lock_file`` (the process that made it may have removed it)."""
        try:
            now = os.stat(self.lock_file)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

    def acquire(self) -> FolderLock:
        """Take the lock (see the class for waiting); record this process as its holder."""
        while self._fd is None:
            fd = self._open()
            try:
                self._lock(fd)
                linked = self._still_linked(fd)  # not: its maker removed it while this process waited
                if linked:
                    self._record(fd)
            except BaseException:
                os.close(fd)
                raise
            if linked:
                self._fd = fd
            else:  # lock the new file instead (closing gives this one back)
                os.close(fd)
        return self

    def _lock(self, fd: int) -> None:
        """Lock ``fd``, refusing or waiting (see the class) while another process holds it."""
        if self._try(fd):
            return
        holder = _holder_text(self.holder())
        if self.wait is False:
            raise FolderBusyError(f"{self.what} is in use by {holder}; {self.fix}")
        limit = None if self.wait is True else time.monotonic() + float(self.wait)
        print(f"medad: {self.what} is in use by {holder}; waiting for it to finish", file=sys.stderr)
        if limit is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        while not self._try(fd):
            if time.monotonic() >= limit:
                raise FolderBusyError(
                    f"{self.what} is still in use by {holder} after waiting {float(self.wait):g} s; {self.fix}"
                )
            time.sleep(self.poll_s)

    def _record(self, fd: int) -> None:
        """Write who holds the lock into its file (what a refused or waiting process prints)."""
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": _command(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)

    def release(self) -> None:
        """Give the lock back (the kernel also does so when the process ends)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # the record is informative only
            os.ftruncate(fd, 0)
            self._remove_if_unused()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _remove_if_unused(self) -> None:
        """Remove the lock file and the folders this lock made when nothing else was written into them (the
        command was refused before any work), while still holding the lock."""
        if not self._made or self._made[-1] != self.lock_file:
            return
        if [p.name for p in self.lock_file.parent.iterdir()] != [self.lock_file.name]:
            return
        self.lock_file.unlink()
        for folder in reversed(self._made[:-1]):
            folder.rmdir()  # OSError (not empty) stops here: the caller suppresses it

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def score_lock(out: str | Path, wait: bool | float = False) -> FolderLock:
    """The lock of a ``medad score --out`` folder (held for the whole command, export included)."""
    return FolderLock(
        Path(out) / LOCK_NAME,
        f"--out folder {out}",
        wait=wait,
        fix="wait for that `medad score` to finish (or rerun with --wait), or give another --out folder",
    )


def hold_until_command_ends(lock: FolderLock, ctx: Any) -> None:
    """Take ``lock`` and give it back when the command-line command of context ``ctx`` (a ``typer.Context``)
    ends, however it ends (the kernel releases it anyway when the process ends)."""
    lock.acquire()
    ctx.call_on_close(lock.release)
