"""The export formats (no torch: ``medad validate`` checks a protocol's ``exports:`` against them)."""

FORMATS = ("png", "nifti", "dicom-seg", "pmap")
