"""Bad inputs the readers must refuse by name or repair with a warning (issue 14, sections 1-3 and 6)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medad.data import check_dataset, read_image, read_mask, write_layout
from medad.data.dicom import read_dicom_frame
from medad.data.manifest import ManifestBuilder
from medad.data.nifti import make_nifti
from medad.data.readers import check_files, max_pixels
from medad.errors import ConfigError, DataError, DataWarning


def _ct(**attrs: object) -> pydicom.Dataset:
    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=False)
    return path


@pytest.mark.parametrize("width", ["0", "-5", "0.0001"])
def test_window_width_below_one_is_refused_naming_the_file(tmp_path, width):
    path = _save(_ct(WindowCenter="40", WindowWidth=width), tmp_path / "w.dcm")
    with pytest.raises(DataError, match=r"w\.dcm has WindowWidth .*>= 1"):
        read_dicom_frame(path)


def test_non_numeric_window_width_is_refused_naming_the_file(tmp_path):
    ds = _ct(WindowCenter="40")
    ds.add(pydicom.DataElement(0x00281051, "LO", "wide"))
    path = _save(ds, tmp_path / "text.dcm")
    with pytest.raises(DataError, match=r"text\.dcm has WindowWidth 'wide'"):
        read_dicom_frame(path)


def test_bits_stored_over_bits_allocated_is_refused(tmp_path):
    path = _save(_ct(BitsStored=20), tmp_path / "bits.dcm")
    with pytest.raises(DataError, match=r"bits\.dcm has BitsStored 20 but BitsAllocated 16"):
        read_dicom_frame(path)


def test_rows_not_matching_pixel_data_is_refused(tmp_path):
    path = _save(_ct(Rows=200), tmp_path / "rows.dcm")
    with pytest.raises(DataError, match=r"rows\.dcm holds 32768 bytes of pixel data but Rows 200"):
        read_dicom_frame(path)


def test_rescale_slope_zero_is_refused_not_scored_blank(tmp_path):
    path = _save(_ct(RescaleSlope=0), tmp_path / "slope.dcm")
    with pytest.raises(DataError, match=r"slope\.dcm has RescaleSlope 0.*blank"):
        read_dicom_frame(path)


def test_datasets_check_lists_bad_dicom_headers_by_file(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    _save(_ct(WindowCenter="40", WindowWidth="0"), folder / "window.dcm")
    _save(_ct(BitsStored=20), folder / "bits.dcm")
    _save(_ct(), folder / "good.dcm")
    report = check_dataset(folder, "dicom")
    named = sorted(Path(p["path"]).name for p in report["problems"])
    assert named == ["bits.dcm", "window.dcm"]


def test_zeroed_jpeg2000_stream_is_refused_and_intact_one_reads(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    assert read_dicom_frame(_save(copy.deepcopy(ds), tmp_path / "ok.dcm")).shape == (64, 64, 3)
    raw = bytearray(ds.PixelData)
    raw[len(raw) // 3 : len(raw) // 3 + 200] = bytes(200)
    ds.PixelData = bytes(raw)
    with pytest.raises(DataError, match=r"zeroed\.dcm frame 0: the JPEG 2000 stream is damaged \(200 zero bytes"):
        read_dicom_frame(_save(ds, tmp_path / "zeroed.dcm"))


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_voxels_are_replaced_by_the_minimum_with_a_warning(tmp_path, bad):
    data = np.linspace(1, 2, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    data[2, 3, 1] = bad
    path = _nifti(tmp_path / "vol.nii.gz", data)
    manifest = make_nifti(path)
    with pytest.warns(DataWarning, match=r"vol\.nii\.gz has 1 NaN or infinite voxel\(s\); they were replaced"):
        slices = [read_image(row) for row in manifest.to_dict("records")]
    assert all(np.isfinite(s).all() for s in slices)
    assert slices[1][2, 3, 0] == 0.0  # the minimum, scaled
    assert len({float(s.mean()) for s in slices}) == 3  # slices still differ (not one NaN-poisoned score)


def test_datasets_check_reports_nan_voxels(tmp_path):
    data = np.ones((16, 16, 2), dtype=np.float32)  # 16 px: a smaller slice would also warn (MIN_IMAGE_SIDE)
    data[..., 0] = np.arange(256).reshape(16, 16)
    data[0, 0, 1] = np.nan
    _nifti(tmp_path / "vol.nii.gz", data)
    report = check_dataset(tmp_path, "nifti")
    assert [Path(p["path"]).name for p in report["problems"]] == ["vol.nii.gz"]
    assert "NaN" in report["problems"][0]["message"]


def test_all_nan_volume_is_a_data_error(tmp_path):
    path = _nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 2), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match=r"nan\.nii\.gz has no finite voxel"):
        read_image(make_nifti(path).iloc[0].to_dict())


def test_nifti_volume_is_read_once_for_all_its_slices(tmp_path, monkeypatch):
    import medad.data.nifti as nifti

    path = _nifti(tmp_path / "vol.nii.gz", np.random.default_rng(0).random((8, 8, 20)).astype(np.float32))
    manifest = make_nifti(path)
    nifti._cached_volume.cache_clear()
    loads = []
    real = nifti._load
    monkeypatch.setattr(nifti, "_load", lambda p: loads.append(p) or real(p))
    for row in manifest.to_dict("records"):
        read_image(row)
    assert len(loads) == 1


def _mask_row(tmp_path: Path, mask: np.ndarray, rule: str = ">0") -> dict:
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return {
        "image_path": str(tmp_path / "img.png"),
        "mask_path": str(tmp_path / "mask.png"),
        "mask_rule": rule,
        "source_format": "image",
    }


def test_gradient_mask_is_binarised_with_a_warning_naming_it(tmp_path):
    row = _mask_row(tmp_path, np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)))
    with pytest.warns(DataWarning, match=r"mask .*mask\.png is not binary \(16 distinct values.*binarised at >0"):
        mask = read_mask(row)
    assert mask.sum() == 15 * 16


def test_binary_mask_and_jpeg_rule_read_without_warning(tmp_path):
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:8, 4:8] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert read_mask(_mask_row(tmp_path, mask)).sum() == 16
        noisy = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
        read_mask(_mask_row(tmp_path, noisy, rule=">127"))


def test_decompression_bomb_is_refused_by_the_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("1", (400, 300)).save(path)
    row = {"image_path": str(path), "source_format": "image"}
    monkeypatch.setenv("MEDAD_MAX_IMAGE_PIXELS", "100000")
    with pytest.raises(DataError, match=r"big\.png has 120,000 pixels, over medad's limit of 100,000"):
        read_image(row)
    monkeypatch.setenv("MEDAD_MAX_IMAGE_PIXELS", "200000")
    assert read_image(row).shape == (300, 400, 3)
    monkeypatch.setenv("MEDAD_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="MEDAD_MAX_IMAGE_PIXELS"):
        max_pixels()


def test_default_pixel_limit_refuses_a_real_bomb_without_pillow_warning(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"bomb\.png has 144,000,000 pixels"):
            read_image({"image_path": str(path), "source_format": "image"})


def test_check_files_names_every_unreadable_training_file(tmp_path):
    root = Path(write_layout(tmp_path / "data", "mvtec", n_normal=2, n_abnormal=2, size=32, seed=0))
    from medad.data import load_manifest

    manifest = load_manifest(root, "mvtec")
    check_files(manifest)  # all readable
    pngs = sorted(root.rglob("test/*/*.png"))
    pngs[0].write_bytes(pngs[0].read_bytes()[:60])
    jpeg = pngs[1].with_suffix(".png")
    Image.open(jpeg).convert("RGB").save(jpeg, format="JPEG")
    jpeg.write_bytes(jpeg.read_bytes()[:-10])  # a JPEG (named .png) without its end marker
    with pytest.raises(DataError, match=r"2 training file\(s\) cannot be read") as info:
        check_files(manifest)
    assert pngs[0].name in str(info.value) and pngs[1].name in str(info.value)


def test_non_utf8_file_name_is_a_named_problem(tmp_path):
    import os

    builder = ManifestBuilder("files", tmp_path, "test", "paths")
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")
    builder.add(name, class_name="object", label=None)
    frame = builder.build(strict=False)
    assert len(frame) == 0
    (problem,) = frame.attrs["problems"]
    assert problem.path.endswith("caf\\xe9.png") and "UTF-8" in problem.message


def test_dicomdir_is_ignored(tmp_path):
    from medad.data.manifest import is_ignored

    assert is_ignored(tmp_path / "DICOMDIR")
    assert not is_ignored(tmp_path / "IMG0001")
