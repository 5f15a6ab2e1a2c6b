"""The export formats (no torch: ``medad validate`` checks a protocol's ``exports:`` against them)."""

from collections.abc import Collection

FORMATS = ("png", "nifti", "dicom-seg", "pmap")
#: The formats written per volume or source file, not per slice.
VOLUME_FORMATS = ("nifti", "dicom-seg", "pmap")


def volume_formats(formats: Collection[str]) -> tuple[str, ...]:
    """The volume formats among ``formats``, in :data:`FORMATS` order: only they make an export write volume
    objects; volumes are grouped (each case's volume id, one gallery row per volume) whatever the formats."""
    return tuple(f for f in VOLUME_FORMATS if f in formats)
