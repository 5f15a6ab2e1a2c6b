"""User-facing errors.

Every mistake a user can make (a wrong path, a broken image, an unknown YAML key, missing weights) is raised
as a :class:`MedadError` whose message names the offending file or key and says how to fix it. The CLI turns
it into one line on stderr and exit code 2; library callers can catch it.
"""

from __future__ import annotations


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
