"""DICOM display attributes, decoder logs, non-image objects, tiny images and source naming (issue 22, 2/3/6)."""

from __future__ import annotations

import copy
import io
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword

from medad.data import check_dataset, read_image
from medad.data.dicom import make_dicom
from medad.data.readers import MIN_IMAGE_SIDE, check_files
from medad.errors import DataError, DataWarning


def _ct_with(folder: Path, name: str, **text: str) -> Path:
    """CT_small with attributes written as text (VR LO), as a broken exporter writes them."""
    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    for keyword, value in text.items():
        if keyword in ds:
            del ds[keyword]
        ds.add(pydicom.DataElement(tag_for_keyword(keyword), "LO", value))
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=False)
    return folder / name


@pytest.mark.parametrize(
    ("attrs", "named"),
    [
        ({"WindowCenter": "abc", "WindowWidth": "400"}, "WindowCenter 'abc'"),
        ({"WindowCenter": "nan", "WindowWidth": "400"}, "WindowCenter 'nan'"),
        ({"RescaleIntercept": "x"}, "RescaleIntercept 'x'"),
        ({"WindowCenter": "40", "WindowWidth": "400", "VOILUTFunction": "WEIRD"}, "VOILUTFunction 'WEIRD'"),
        ({"PixelRepresentation": "zz"}, "a non-numeric PixelRepresentation"),
    ],
)
def test_text_in_a_display_attribute_is_a_named_data_error(tmp_path, attrs, named):
    _ct_with(tmp_path, "bad.dcm", **attrs)
    row = make_dicom(tmp_path).iloc[0]
    with pytest.raises(DataError, match=rf"case {row['case_id']} has {named}"):
        read_image(row)
    with pytest.raises(DataError, match=named):
        check_files(make_dicom(tmp_path))
    report = check_dataset(tmp_path, "dicom")
    assert [p["path"] for p in report["problems"]] == ["bad.dcm"] and named in report["problems"][0]["message"]


def test_voi_lut_sequence_without_data_is_named(tmp_path):
    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    ds.VOILUTSequence = pydicom.Sequence([item])
    ds.save_as(tmp_path / "lut.dcm", enforce_file_format=False)
    with pytest.raises(DataError, match=r"has a VOILUTSequence without a usable LUTDescriptor"):
        read_image(make_dicom(tmp_path).iloc[0])


def test_numeric_window_written_as_text_still_reads_like_the_number(tmp_path):
    text = read_image(make_dicom(_ct_with(tmp_path / "a", "t.dcm", WindowCenter="40", WindowWidth="400")).iloc[0])
    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    ds.WindowCenter, ds.WindowWidth = 40, 400
    (tmp_path / "b").mkdir()
    ds.save_as(tmp_path / "b" / "n.dcm", enforce_file_format=False)
    number = read_image(make_dicom(tmp_path / "b").iloc[0])
    assert np.array_equal(text, number)


def _damaged_rle(folder: Path) -> Path:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    data = bytearray(ds.PixelData)
    for i in range(len(data) // 2, len(data) // 2 + 200):
        data[i] = (data[i] * 7 + 3) % 256
    ds.PixelData = bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / "rle.dcm", enforce_file_format=False)
    return folder / "rle.dcm"


def test_decoder_log_becomes_the_one_message_and_never_reaches_stderr(tmp_path):
    _damaged_rle(tmp_path)
    row = make_dicom(tmp_path).iloc[0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)  # what a program that configures logging would print
    try:
        with pytest.raises(DataError) as info:
            read_image(row)
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue() == ""
    message = str(info.value)
    assert "the decoders said:" in message and "RLE segment" in message and "Traceback" not in message
    assert str(tmp_path) not in message and f"case {row['case_id']}" in message


def test_rt_dose_and_other_non_image_objects_are_refused_by_name(tmp_path):
    shutil.copy(get_testdata_file("rtdose.dcm"), tmp_path / "dose.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    with pytest.raises(DataError, match=r"dose\.dcm: is a RT Dose Storage object: .*cannot score it"):
        make_dicom(tmp_path)
    kept = make_dicom(tmp_path, strict=False)
    assert len(kept) == 1 and kept.iloc[0]["image_path"].endswith("ct.dcm")
    dose = make_dicom(tmp_path / "dose.dcm", strict=False)
    assert dose.empty and "RT Dose" in dose.attrs["problems"][0].message


def test_rt_dose_row_from_a_manifest_is_refused_when_read(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    row = make_dicom(tmp_path).iloc[0].copy()
    row["image_path"] = shutil.copy(get_testdata_file("rtdose.dcm"), tmp_path / "dose.dcm")
    with pytest.raises(DataError, match=rf"case {row['case_id']} is a RT Dose Storage object"):
        read_image(row)


@pytest.mark.parametrize("size", [(1, 1), (3, 40)])
def test_an_image_smaller_than_a_patch_warns_naming_it(tmp_path, size):
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.full((MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3), 128, np.uint8)).save(tmp_path / "ok.png")
    report = check_dataset(tmp_path, "files")
    assert [Path(p["path"]).name for p in report["problems"]] == ["tiny.png"]
    assert f"smaller than {MIN_IMAGE_SIDE} px" in report["problems"][0]["message"]


def test_a_one_voxel_volume_warns(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((1, 1, 1), np.float32), np.eye(4)), tmp_path / "dot.nii.gz")
    row = check_dataset(tmp_path, "nifti")
    assert "dot.nii.gz is 1x1 px" in row["problems"][0]["message"]


def test_dicom_problems_in_a_check_name_the_file_relative_to_the_folder(tmp_path):
    patient = tmp_path / "DOE^JOHN"
    path = _ct_with(patient, "ct.dcm", WindowCenter="abc", WindowWidth="400")
    report = check_dataset(tmp_path, "dicom")
    assert [p["path"] for p in report["problems"]] == ["DOE^JOHN/ct.dcm"]
    assert str(path) not in str(report["problems"])


def test_read_image_of_a_dicom_row_never_names_the_source_path(tmp_path):
    patient = tmp_path / "DOE^JOHN"
    _ct_with(patient, "ct.dcm", RescaleIntercept="x")
    row = make_dicom(tmp_path).iloc[0]
    with warnings.catch_warnings(), pytest.raises(DataError) as info:
        warnings.simplefilter("error", DataWarning)
        read_image(row)
    assert "DOE" not in str(info.value) and row["case_id"] in str(info.value)


def test_score_skips_a_damaged_dicom_in_one_line_without_its_path_or_a_traceback(tmp_path, monkeypatch, capsys):
    from tests.cli import run_medad

    folder = tmp_path / "DOE^JOHN"
    _damaged_rle(folder)
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    code, out = run_medad(monkeypatch, capsys, "score", str(folder), "--out", str(tmp_path / "o"), "--model",
                          "ad_dinov3_tiny", "--no-heatmaps")  # fmt: skip
    assert code == 2 and "1 of 2 scored; 1 skipped" in out
    assert "Traceback" not in out and "DOE" not in out.replace(str(tmp_path / "o"), "")
    assert "the decoders said:" in out


def test_a_non_image_dicom_named_on_the_command_line_is_refused_by_its_name_only(tmp_path):
    from medad.data import manifest_from_paths

    patient = tmp_path / "DOE^JOHN"
    patient.mkdir()
    dose = Path(shutil.copy(get_testdata_file("rtdose.dcm"), patient / "dose.dcm"))
    with pytest.raises(DataError, match=r"dose\.dcm: is a RT Dose Storage object") as info:
        manifest_from_paths([dose])
    assert "DOE" not in str(info.value)
