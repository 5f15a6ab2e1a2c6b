"""Pseudonymous case ids and log redaction, so patient identifiers never reach logs, reports or file names."""

from __future__ import annotations

import hashlib
import logging
import re


def case_id(key: str, salt: str = "") -> str:
    """Return a stable pseudonymous case id (``case-`` + 12 hex digits) for a path or source key.

    The id is a salted hash: it is stable across runs (same key and salt, same id) but reveals nothing of
    the file name, which for clinical data can itself hold a patient's name or id.
    """
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()
    return f"case-{digest[:12]}"


class RedactFilter(logging.Filter):
    """A logging filter that replaces given sensitive strings (names, ids, source paths) with ``[redacted]``."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self._pattern: re.Pattern[str] | None = None
        self.update(secrets or [])

    def update(self, secrets: list[str]) -> None:
        """Add strings to redact."""
        words = sorted({s for s in secrets if s and len(s) >= 2}, key=len, reverse=True)
        existing = [self._pattern.pattern] if self._pattern is not None else []
        parts = existing + [re.escape(w) for w in words]
        self._pattern = re.compile("|".join(parts)) if parts else None

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced."""
        return self._pattern.sub("[redacted]", text) if self._pattern is not None else text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = ()
        return True
