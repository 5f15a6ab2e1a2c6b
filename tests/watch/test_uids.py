"""Result UIDs a redo reproduces: fixed by study, model fingerprint, object kind and referenced sources, not by the
result's content (a redo on another device may differ in the last bit and must still store nothing twice)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medad.watch.uids import assign_result_uids, fingerprint

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
STUDY = "1.2.826.0.1.3680043.8.498.1"


def _result(path: Path, pixels: bytes, kind: str = "BINARY", source: str = "1.2.3.7") -> Path:
    """A minimal SEG-like object with the export's own (content-derived) UIDs."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SegmentationType = SEG, kind
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY, generate_uid(), generate_uid()
    ref = pydicom.Dataset()
    ref.ReferencedInstanceSequence = [pydicom.Dataset()]
    ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID = source
    ds.ReferencedSeriesSequence = [ref]
    ds.BitsAllocated, ds.PixelData = 1, pixels
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = SEG, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path)
    return str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.file_meta.MediaStorageSOPInstanceUID)


def test_a_redo_with_other_scores_gets_the_same_uids(tmp_path: Path) -> None:
    node = fingerprint({"name": "ad_dinov3_tiny"}, "ab" * 32, {"threshold": "fixed:0.5"})
    first = _result(tmp_path / "a.dcm", b"\x00\x01" * 8)
    redo = _result(tmp_path / "b.dcm", b"\x01\x01" * 8)  # the redo's scores differ
    assert _uids(first)[:2] != _uids(redo)[:2]  # as the export wrote them
    assert assign_result_uids([first], STUDY, node) == assign_result_uids([redo], STUDY, node)
    assert _uids(first) == _uids(redo)
    series, instance, meta = _uids(first)
    assert instance == meta and series != instance
    before = first.read_bytes()
    assign_result_uids([first], STUDY, node)  # idempotent: a second pass changes nothing
    assert first.read_bytes() == before


def test_other_weights_settings_kind_or_source_get_other_uids(tmp_path: Path) -> None:
    node = fingerprint({"name": "m"}, "ab" * 32, {"threshold": "fixed:0.5"})
    others = [
        fingerprint({"name": "m"}, "cd" * 32, {"threshold": "fixed:0.5"}),
        fingerprint({"name": "m"}, "ab" * 32, {"threshold": "fixed:0.6"}),
    ]
    base = assign_result_uids([_result(tmp_path / "base.dcm", b"\x00\x00")], STUDY, node)
    seen = {base[0]}
    for i, other in enumerate(others):
        seen.update(assign_result_uids([_result(tmp_path / f"o{i}.dcm", b"\x00\x00")], STUDY, other))
    seen.update(assign_result_uids([_result(tmp_path / "f.dcm", b"\x00\x00", kind="FRACTIONAL")], STUDY, node))
    seen.update(assign_result_uids([_result(tmp_path / "s.dcm", b"\x00\x00", source="1.2.3.8")], STUDY, node))
    seen.update(assign_result_uids([_result(tmp_path / "t.dcm", b"\x00\x00")], "1.2.826.0.1.3680043.8.498.2", node))
    assert len(seen) == 6
