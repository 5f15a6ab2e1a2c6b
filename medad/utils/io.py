"""Atomic file writes and content hashing.

A run killed at any moment must never leave a half-written file that a later run would trust, so every
result file goes through a temporary file in the same folder followed by :func:`os.replace`. A write that fails
because the disk is full, a file-size limit is hit or the folder is read-only ends as one
:class:`~medad.errors.DiskError` naming the file and the fix (:func:`disk_errors`), never as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from medad.errors import disk_error

_SHORT_WRITE_WORDS = ("unexpected pos", "file write failed", "write failed", "PytorchStreamWriter failed")


def _short_write_errno() -> int:
    """Which limit a short write without an errno (torch's zip writer) most likely hit: the file-size limit when
    one is set and the file reached it, else a full disk."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return errno.EFBIG
    return errno.ENOSPC


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failed write of ``path`` (full disk, file-size limit, read-only or forbidden folder; torch's
    ``unexpected pos`` short write) into a :class:`~medad.errors.DiskError` naming ``path`` and the fix."""
    try:
        yield
    except OSError as exc:
        error = disk_error(exc, path)
        if error is None:
            raise
        raise error from None
    except RuntimeError as exc:
        if not any(word in str(exc) for word in _SHORT_WRITE_WORDS):
            raise
        raise (disk_error(OSError(_short_write_errno(), str(exc)), path) or exc) from None


def _umask() -> int:
    """The process umask (read from /proc where it can be, else by setting and restoring it)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()
"""The permission bits ``open()`` gives a new file; atomic writes give theirs the same (``mkstemp`` would give 0600)."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and move it into place only on success.

    The rename makes the file appear whole or not at all, even if the process is killed. ``durable`` also
    fsyncs before the rename, so the content survives an OS crash; bulk data that a re-run can recompute
    (prediction chunks) skips it to stream at disk speed.
    """
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, NEW_FILE_MODE)
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` deterministically (sorted keys, fixed separators) so equal inputs give equal bytes."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as canonical JSON to ``path`` atomically."""
    write_text_atomic(path, canonical_json(obj))


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Return the hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_config(obj: Any) -> str:
    """Content hash of a JSON-serialisable config (first 16 hex digits of the sha256 of its canonical JSON)."""
    return sha256_text(canonical_json(obj))[:16]
