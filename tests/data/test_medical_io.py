"""DICOM (real pydicom test files) and NIfTI input."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medad.data import dicom as dicom_module
from medad.data import load_manifest, read_image, read_mask, slice_affine
from medad.data.dicom import make_dicom
from medad.data.nifti import make_nifti
from medad.errors import DataError


def _ct_copy(tmp_path: Path, name: str, photometric: str) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = photometric
    ds.WindowCenter, ds.WindowWidth = 40, 400
    path = tmp_path / name
    ds.save_as(path)
    return path


def test_windowing_then_monochrome1_inversion_last(tmp_path: Path) -> None:
    mono2 = make_dicom(_ct_copy(tmp_path, "m2.dcm", "MONOCHROME2")).iloc[0]
    mono1 = make_dicom(_ct_copy(tmp_path, "m1.dcm", "MONOCHROME1")).iloc[0]
    a, b = read_image(mono2), read_image(mono1)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    assert np.allclose(a[..., 0], expected, atol=1e-4)
    assert (a == 0).mean() > 0.01 and (a == 1).mean() > 0.01, "the window must clip in this test"
    assert np.allclose(b, 1 - a, atol=1e-6)


def test_rgb_multiframe_and_compressed(tmp_path: Path) -> None:
    rgb = make_dicom(get_testdata_file("examples_rgb_color.dcm"))
    image = read_image(rgb.iloc[0])
    assert image.shape == (240, 320, 3) and not np.allclose(image[..., 0], image[..., 1])
    frames = make_dicom(get_testdata_file("examples_ybr_color.dcm"))
    assert len(frames) == 30 and frames["frame"].tolist() == list(range(30))
    assert frames["group_id"].nunique() == 1 and frames["case_id"].is_unique
    f5 = read_image(frames.iloc[5])
    direct = pydicom.pixels.pixel_array(get_testdata_file("examples_ybr_color.dcm"), index=5) / 255.0
    assert f5.shape == (240, 320, 3) and np.allclose(f5, direct, atol=1e-6)
    for name in ("JPGExtended.dcm", "MR_small_jp2klossless.dcm"):
        row = make_dicom(get_testdata_file(name)).iloc[0]
        out = read_image(row)
        assert out.ndim == 3 and 0 <= out.min() < out.max() <= 1
        assert not read_mask(row).any()


def test_missing_decoder_names_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoder(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Unable to decode the pixel data as the following plugins are missing dependencies")

    monkeypatch.setattr(dicom_module, "pixel_array", no_decoder)
    row = make_dicom(get_testdata_file("JPGExtended.dcm")).iloc[0]
    with pytest.raises(DataError, match=rf"case {row['case_id']} .*install pylibjpeg-libjpeg .*medad\[dicom\]"):
        read_image(row)


def test_no_patient_identifiers_in_ids_or_messages(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    path = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    manifest = make_dicom(tmp_path)
    text = manifest.to_csv()
    assert str(ds.PatientName) not in text and str(ds.PatientID) not in text
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError) as info:
        read_image(manifest.iloc[0])
    assert str(ds.PatientID) not in str(info.value) and "ct.dcm" not in str(info.value)  # no path: the case id
    assert manifest.iloc[0]["case_id"] in str(info.value)


def test_nifti_slices_and_affine(tmp_path: Path) -> None:
    affine = np.array([[0, 0, 2.0, -50], [-0.8, 0, 0, 30], [0, 0.9, 0, 10], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(size=(12, 10, 5)).astype(np.float32)
    mask = np.zeros((12, 10, 5), np.uint8)
    mask[3:6, 2:4, 1] = 1
    (tmp_path / "img").mkdir()
    (tmp_path / "seg").mkdir()
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "img" / "vol.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "seg" / "vol_mask.nii.gz")
    manifest = make_nifti(tmp_path / "img", axis=1, masks=tmp_path / "seg")
    assert len(manifest) == 10 and set(manifest["slice_axis"]) == {1}
    assert manifest["label"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    row = manifest.iloc[3]
    image = read_image(row)
    assert image.shape == (12, 5, 3)
    expected = (data[:, 3, :] - data.min()) / (data.max() - data.min())
    assert np.allclose(image[..., 0], expected, atol=1e-6)
    assert np.array_equal(read_mask(row), mask[:, 3, :] > 0)
    world = slice_affine(row) @ np.array([7, 2, 0, 1.0])
    assert np.allclose(world, affine @ np.array([7, 3, 2, 1.0]))
    assert load_manifest(tmp_path / "img" / "vol.nii.gz", "auto")["frame"].tolist() == [0, 1, 2, 3, 4]
