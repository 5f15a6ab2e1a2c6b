"""What `medad score` prints while it scores: a DICOM / NIfTI source is named by its case id, never by its path
(which often holds the patient's name), and its bar is the one progress style `medad run` uses too."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from medad.engine.scorer import score_files
from medad.errors import DataWarning
from tests.cli import run_medad


def _patient_folder(tmp_path: Path) -> Path:
    from pydicom.data import get_testdata_file

    folder = tmp_path / "Doe^John_12345"
    folder.mkdir()
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (folder / "Doe_John_scan1.dcm").write_bytes(data[:-20000])  # truncated pixel data: skipped when read
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "Doe_John_scan2.dcm")
    return folder


def test_a_skipped_dicom_is_named_by_case_id_not_by_its_path(tmp_path, monkeypatch, capsys) -> None:
    folder = _patient_folder(tmp_path)
    out = tmp_path / "out"
    for extra in ([], ["--export", "dicom-seg", "--deidentify"]):
        code, text = run_medad(
            monkeypatch, capsys, "score", str(folder), "--model", "ad_dinov3_tiny", "--out", str(out), "--device",
            "cpu", *extra,
        )  # fmt: skip
        assert code == 2 and "1 of 2 scored; 1 skipped" in text, text
        assert "Doe" not in text and "scan1" not in text and "12345" not in text, text
        skipped = [line for line in text.splitlines() if line.startswith("warning: skipped image")]
        assert len(skipped) == 1 and "(case case-" in skipped[0] and "truncated" in skipped[0]
        assert str(out / "private" / "predictions.manifest.csv") in skipped[0]


def test_a_reading_warning_of_a_nifti_names_its_case_not_its_path(tmp_path) -> None:
    import nibabel as nib

    volume = np.random.default_rng(2).normal(size=(24, 20, 2)).astype(np.float32)
    volume[3, 4, 0] = np.nan
    path = tmp_path / "Doe^Jane_777" / "Doe_Jane_t1.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_files([path], tmp_path / "out", model_name="ad_dinov3_tiny", device="cpu", progress=False)
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning) and "NaN" in str(w.message)]
    assert said and all(m.startswith("case case-") and "Doe" not in m and str(tmp_path) not in m for m in said)


def test_score_and_run_draw_their_bars_with_the_one_progress_helper(tmp_path, monkeypatch, capsys) -> None:
    import medad.utils.progress as progress
    from medad.protocols.progress import RunDisplay

    made: list[bool] = []
    real = progress.make_progress

    def spy(enabled: bool = True, console=None):
        made.append(enabled)
        return real(enabled, console)

    monkeypatch.setattr(progress, "make_progress", spy)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 80, dtype=np.uint8)).save(folder / "a.png")
    score_files([folder], tmp_path / "out", model_name="ad_dinov3_tiny", device="cpu", heatmaps=False)
    assert made == [True]
    err = capsys.readouterr().err
    assert "score" in err and "images" in err and "1/1" in err and "ETA" in err and "batch/s" not in err
    RunDisplay(tmp_path / "run.log", enabled=False)
    assert made == [True, False]
