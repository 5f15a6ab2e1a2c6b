"""Volumes of a manifest (medad.data.series): grouping by series, order along the normal, named problems."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from medad.data import manifest_from_paths
from medad.data.dicom import make_dicom
from medad.data.nifti import make_nifti
from medad.data.series import group_volumes, volume_table
from tests.export.series_files import enhanced_from, write_series

TESTDATA = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"


def _names(manifest: pd.DataFrame, indices: tuple[int, ...]) -> list[str]:
    return [Path(manifest.loc[i, "image_path"]).name for i in indices]


def test_oblique_series_is_ordered_along_its_normal_not_by_name_or_instance_number(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", n=6, seed=3)
    manifest = make_dicom(tmp_path / "s")
    (volume,) = group_volumes(manifest)
    assert volume.kind == "dicom-series" and volume.regular
    assert _names(manifest, volume.indices) == [p.name for p in paths]
    numbers = [int(pydicom.dcmread(p).InstanceNumber) for p in paths]
    assert numbers != sorted(numbers) and [p.name for p in paths] != sorted(p.name for p in paths)
    assert volume.size == (10, 12, 6)
    np.testing.assert_allclose(volume.spacing, (0.6, 0.8, 2.5), atol=1e-6)
    np.testing.assert_allclose(volume.origin, (-20.0, 15.0, 40.0), atol=1e-6)
    direction = np.reshape(volume.direction, (3, 3))
    np.testing.assert_allclose(direction[:, 2], np.cross(direction[:, 0], direction[:, 1]), atol=1e-6)
    affine = volume.affine()
    assert affine is not None  # RAS: x and y negated
    np.testing.assert_allclose(affine[:3, 3], (20.0, -15.0, 40.0), atol=1e-6)
    uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    assert volume.volume_id.startswith("volume-") and uid not in str(volume)


def test_volume_table_gives_each_row_its_volume_and_slice_order(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", n=4, seed=1)
    png = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    manifest = manifest_from_paths([tmp_path / "s", png])
    table = volume_table(manifest)
    assert list(table.columns) == ["volume_id", "slice_order"] and table.index.equals(manifest.index)
    assert str(table["slice_order"].dtype) == "Int64"
    plain = manifest["source_format"] == "image"
    assert (table.loc[plain, "volume_id"] == "").all() and table.loc[plain, "slice_order"].isna().all()
    dicom = table[~plain]
    assert dicom["volume_id"].nunique() == 1
    by_order = dicom.sort_values("slice_order").index
    assert [Path(manifest.loc[i, "image_path"]).name for i in by_order] == [p.name for p in paths]
    assert sorted(dicom["slice_order"].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"missing": [2]}, "a gap of 5 mm"),
        ({"n": 4, "missing": [1]}, "a gap of 5 mm"),  # 3 slices left: the gap is half the steps
        ({"sizes": {3: (12, 11)}}, "mixed sizes"),
    ],
)
def test_irregular_series_name_their_problem(tmp_path: Path, kwargs: dict, expected: str) -> None:
    write_series(tmp_path / "s", **{"n": 5, **kwargs})
    (volume,) = group_volumes(make_dicom(tmp_path / "s"))
    assert not volume.regular and any(expected in p for p in volume.problems), volume.problems


def test_duplicates_and_mixed_orientations_are_named(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", n=3)
    twin = pydicom.dcmread(paths[1])
    twin.SOPInstanceUID = pydicom.uid.generate_uid()
    twin.save_as(tmp_path / "s" / "twin.dcm")
    tilted = pydicom.dcmread(paths[2])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    tilted.save_as(paths[2])
    (volume,) = group_volumes(make_dicom(tmp_path / "s"))
    joined = " | ".join(volume.problems)
    assert "mixed orientations" in joined and "duplicates" in joined
    tilted.ImageOrientationPatient = pydicom.dcmread(paths[0]).ImageOrientationPatient
    tilted.save_as(paths[2])
    (volume,) = group_volumes(make_dicom(tmp_path / "s"))
    assert volume.problems == ("duplicates: 1 slice(s) at the position of another slice",)


def test_enhanced_multiframe_object_is_one_volume_ordered_by_its_frame_positions(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", n=4)
    enhanced = enhanced_from(paths[::-1], tmp_path / "enhanced.dcm")  # frames stored last slice first
    manifest = make_dicom(enhanced)
    (volume,) = group_volumes(manifest)
    assert volume.kind == "dicom-multiframe" and volume.regular
    assert [int(manifest.loc[i, "frame"]) for i in volume.indices] == [3, 2, 1, 0]
    series = group_volumes(make_dicom(tmp_path / "s"))[0]
    np.testing.assert_allclose(volume.affine(), series.affine(), atol=1e-6)


def test_legacy_multiframe_rtdose_uses_its_grid_frame_offsets(tmp_path: Path) -> None:
    shutil.copy(pydicom.data.get_testdata_file("rtdose.dcm"), tmp_path / "dose.dcm")
    manifest = make_dicom(tmp_path / "dose.dcm", strict=False)
    if manifest.empty:  # RT Dose is refused as an input; group the frames of the file itself
        manifest = pd.DataFrame({"image_path": [str(tmp_path / "dose.dcm")] * 15, "frame": range(15),
                                 "source_format": "dicom"})  # fmt: skip
    (volume,) = group_volumes(manifest)
    ds = pydicom.dcmread(tmp_path / "dose.dcm")
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    assert volume.kind == "dicom-multiframe" and volume.size == (int(ds.Columns), int(ds.Rows), 15)
    assert volume.spacing is not None and volume.spacing[2] == pytest.approx(abs(offsets[1] - offsets[0]))


def test_real_series_from_pydicom_are_ordered_by_position(tmp_path: Path) -> None:
    shutil.copytree(TESTDATA / "98892001" / "CT5N", tmp_path / "ct")
    manifest = make_dicom(tmp_path / "ct")
    (volume,) = group_volumes(manifest)
    assert volume.regular and volume.spacing is not None and volume.spacing[2] == pytest.approx(2.5)
    z = [float(pydicom.dcmread(manifest.loc[i, "image_path"]).ImagePositionPatient[2]) for i in volume.indices]
    assert z == sorted(z)  # InstanceNumber 6..10 runs the other way (z decreasing)


def test_real_series_with_a_gap_and_a_localizer_are_named(tmp_path: Path) -> None:
    shutil.copytree(TESTDATA / "77654033" / "CT2", tmp_path / "gap")
    (gap,) = group_volumes(make_dicom(tmp_path / "gap"))
    assert any(p.startswith("a gap of") for p in gap.problems), gap.problems
    shutil.copytree(TESTDATA / "98892003" / "MR2", tmp_path / "localizer")
    volumes = group_volumes(make_dicom(tmp_path / "localizer"))
    stacks = [v for v in volumes if len(v.indices) == 3]  # two 3-plane localizer series (and a lone slice)
    assert len(stacks) == 2 and all(any("mixed orientations" in p for p in v.problems) for v in stacks)


def test_nifti_file_is_one_volume_with_its_own_affine(tmp_path: Path) -> None:
    affine = np.array([[0, -0.9, 0, 30.0], [0.7, 0, 0, -12.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine), tmp_path / "v.nii.gz")
    manifest = make_nifti(tmp_path / "v.nii.gz", axis=1)
    (volume,) = group_volumes(manifest.iloc[::-1])
    assert volume.kind == "nifti" and volume.regular and volume.size == (6, 5, 4)
    assert [int(manifest.loc[i, "frame"]) for i in volume.indices] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(volume.affine(), affine, atol=1e-9)


def test_unreadable_file_is_a_named_problem_not_an_error(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", n=2)
    manifest = make_dicom(tmp_path / "s")
    paths[0].write_bytes(b"broken")
    volumes = group_volumes(manifest)
    assert [v.problems for v in volumes if v.problems] == [("the DICOM header cannot be read",)]
