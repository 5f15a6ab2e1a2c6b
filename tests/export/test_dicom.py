"""DICOM SEG / Parametric Map / NIfTI exports of real DICOM files: validity, round trips, geometry, de-id."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import medad
from medad.export import export_predictions, fixed_threshold
from tests.export.conftest import CT_ID, CT_NAME, blob, dciodvfy_errors, manifest_row, needs_dciodvfy

THRESHOLD = 0.5


@pytest.fixture
def dicom_export(tmp_path: Path, dicom_sources: dict[str, Path], make_run) -> tuple[Path, dict, dict]:
    """One export of CT, MR, MONOCHROME1 MR (single frame) and RT dose (15 frames)."""
    rows, maps, expected = [], [], {}
    for key in ("ct", "mr", "mono1"):
        ds = pydicom.dcmread(dicom_sources[key], stop_before_pixels=True)
        shape = (int(ds.Rows), int(ds.Columns))
        rows.append(manifest_row(dicom_sources[key], "dicom", frame=0))
        maps.append(blob(shape, (shape[0] * 0.4, shape[1] * 0.6), shape[0] / 6))
        expected[key] = [maps[-1]]
    ds = pydicom.dcmread(dicom_sources["multiframe"], stop_before_pixels=True)
    expected["multiframe"] = []
    for frame in range(int(ds.NumberOfFrames)):
        rows.append(manifest_row(dicom_sources["multiframe"], "dicom", frame=frame))
        maps.append(blob((int(ds.Rows), int(ds.Columns)), (2 + frame % 5, 4), 2.5) * (0.4 + frame / 20))
        expected["multiframe"].append(maps[-1])
    preds, manifest = make_run(rows, maps)
    out = export_predictions(
        preds,
        manifest,
        tmp_path / "export",
        formats=("png", "nifti", "dicom-seg", "pmap"),
        threshold=fixed_threshold(THRESHOLD),
    )
    report = json.loads((out / "export.json").read_text())
    volume = {
        key: next(c["volume_files"] for c in report["cases"] if c["index"] == i)
        for key, i in (("ct", 0), ("mr", 1), ("mono1", 2), ("multiframe", 3))
    }
    return out, volume, expected


@needs_dciodvfy
def test_every_dicom_output_passes_dciodvfy(dicom_export) -> None:
    out, _, _ = dicom_export
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 12
    for path in files:
        assert dciodvfy_errors(path) == [], path.name


def _frames(seg: pydicom.Dataset, source: pydicom.Dataset) -> np.ndarray:
    """SEG / PMAP frames in source-frame order (fractional values rescaled to [0, 1]), checking references."""
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames == 1 and isinstance(seg, hd.seg.Segmentation):
        return seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1], rescale_fractional=True)[
            ..., 0
        ]
    stored = seg.pixel_array.reshape(frames, source.Rows, source.Columns)
    ordered = np.full(stored.shape, -1.0)
    for k, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        ordered[int(ref.get("ReferencedFrameNumber", 1)) - 1] = stored[k]
    scale = float(seg.MaximumFractionalValue) if seg.get("SegmentationType") == "FRACTIONAL" else 1.0
    return ordered / scale


def test_seg_and_pmap_read_back_equal_to_maps(dicom_export, dicom_sources) -> None:
    out, volume, expected = dicom_export
    for key, maps in expected.items():
        source = pydicom.dcmread(dicom_sources[key])
        heat = np.stack(maps)
        seg = hd.seg.segread(out / volume[key]["seg"])
        assert seg.SegmentationType == "BINARY"
        np.testing.assert_array_equal(_frames(seg, source).astype(bool), heat >= THRESHOLD)
        frac = hd.seg.segread(out / volume[key]["seg_fractional"])
        assert frac.SegmentationType == "FRACTIONAL"
        np.testing.assert_allclose(_frames(frac, source), np.clip(heat, 0, 1), atol=0.5 / 255 + 1e-6)
        pmap = pydicom.dcmread(out / volume[key]["pmap"])
        np.testing.assert_allclose(_frames(pmap, source), heat, atol=1e-6)
        for obj in (seg, frac, pmap):
            assert obj.SeriesDescription.startswith("RESEARCH USE ONLY")
            assert obj.PatientID == source.PatientID
            refs = [
                r.ReferencedSOPInstanceUID for s in obj.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence
            ]
            assert refs == [source.SOPInstanceUID]
        description = seg.SegmentSequence[0]
        assert description.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Morphologically Abnormal Structure"
        assert description.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"
        algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "medad AD-DINOv3"
        assert algorithm.AlgorithmVersion == medad.__version__


def test_nifti_from_dicom_uses_lps_to_ras_geometry(dicom_export, dicom_sources) -> None:
    out, volume, expected = dicom_export
    for key in ("ct", "multiframe"):
        ds = pydicom.dcmread(dicom_sources[key], stop_before_pixels=True)
        mask_img = nib.load(out / volume[key]["nifti_mask"])
        heat_img = nib.load(out / volume[key]["nifti_heatmap"])
        assert mask_img.get_data_dtype() == np.uint8 and heat_img.get_data_dtype() == np.float32
        np.testing.assert_array_equal(mask_img.affine, heat_img.affine)
        heat = np.stack(expected[key])
        np.testing.assert_array_equal(np.asarray(mask_img.dataobj), np.transpose(heat >= THRESHOLD, (2, 1, 0)))
        np.testing.assert_allclose(heat_img.get_fdata(), np.transpose(heat, (2, 1, 0)), atol=1e-6)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        c, r, k = 3, 5, len(expected[key]) - 1
        offsets = [float(v) for v in ds.get("GridFrameOffsetVector", [0.0])]
        lps = ipp + c * col_spacing * iop[:3] + r * row_spacing * iop[3:] + offsets[k] * np.cross(iop[:3], iop[3:])
        world = mask_img.affine @ np.array([c, r, k, 1.0])
        np.testing.assert_allclose(world[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)
        assert int(mask_img.header["sform_code"]) == 1


def test_png_mask_at_dicom_size_and_monochrome1_inverted_last(dicom_export, dicom_sources) -> None:
    out, _, _ = dicom_export
    report = json.loads((out / "export.json").read_text())
    by_index = {c["index"]: c for c in report["cases"]}
    ct = pydicom.dcmread(dicom_sources["ct"], stop_before_pixels=True)
    mask = np.asarray(Image.open(out / by_index[0]["files"]["mask"]))
    assert mask.shape == (ct.Rows, ct.Columns) and set(np.unique(mask)) <= {0, 255}
    mr = np.asarray(Image.open(out / by_index[1]["files"]["image"]), dtype=int)
    mono1 = np.asarray(Image.open(out / by_index[2]["files"]["image"]), dtype=int)
    assert np.abs(mono1 - (255 - mr)).max() <= 1
    assert report["threshold"] == {"rule": "fixed", "value": THRESHOLD, "details": {}}


@needs_dciodvfy
def test_deidentified_exports_are_valid_and_consistent(tmp_path: Path, dicom_sources, make_run) -> None:
    source = pydicom.dcmread(dicom_sources["ct"])
    preds, manifest = make_run([manifest_row(dicom_sources["ct"], "dicom", frame=0)], [blob((128, 128), (50, 60), 12)])
    out = export_predictions(
        preds,
        manifest,
        tmp_path / "deid",
        formats=("dicom-seg", "pmap"),
        threshold=fixed_threshold(0.5),
        deidentify=True,
    )
    objects = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert len(objects) == 3
    for obj in objects:
        assert dciodvfy_errors(Path(obj.filename)) == []
        assert obj.PatientIdentityRemoved == "YES"
        assert "Basic Application Level Confidentiality" in obj.DeidentificationMethod
        assert str(obj.PatientName) != CT_NAME and obj.PatientID != CT_ID
        assert obj.StudyInstanceUID != source.StudyInstanceUID
        assert obj.FrameOfReferenceUID != source.FrameOfReferenceUID
        assert obj.file_meta.MediaStorageSOPInstanceUID == obj.SOPInstanceUID
        assert not any(e.tag.is_private for e in obj.iterall())
        assert "InstitutionName" not in obj and obj.get("StudyDate", "") == ""
    for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert len({str(o.get(key)) for o in objects}) == 1, key
    refs = {o.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID for o in objects}
    assert len(refs) == 1 and source.SOPInstanceUID not in refs
    assert len({o.SOPInstanceUID for o in objects}) == 3
