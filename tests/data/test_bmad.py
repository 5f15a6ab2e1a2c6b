"""BMAD's six subsets (DorisBao/BMAD) in their train/good, valid/, test/{good,Ungood} layout."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.data import check_dataset, detect_kind, load_all_splits, load_manifest, read_mask, write_layout
from medad.data.registry import catalogue
from medad.errors import DataError, DataWarning
from medad.models import prompt_word
from tests.cli import run_medad

WITH_MASKS = ("bmad_brainmri", "bmad_liverct", "bmad_resc")
IMAGE_LEVEL = ("bmad_oct2017", "bmad_chestxray", "bmad_histopathology")
FOLDERS = {
    "bmad_brainmri": "Brain",
    "bmad_liverct": "Liver",
    "bmad_resc": "RESC",
    "bmad_oct2017": "OCT2017",
    "bmad_chestxray": "Chest",
    "bmad_histopathology": "camelyon16",
}


def _write(tmp_path: Path, kind: str) -> Path:
    return write_layout(tmp_path / kind, kind.replace("_", "-"), n_normal=2, n_abnormal=3, size=24, seed=3)


@pytest.mark.parametrize("kind", WITH_MASKS + IMAGE_LEVEL)
def test_every_subset_is_detected_read_and_checked(tmp_path: Path, kind: str) -> None:
    out = _write(tmp_path, kind)
    subset = out / FOLDERS[kind]
    assert detect_kind(out) == kind and detect_kind(subset) == kind
    manifest = load_all_splits(out, kind)
    counts = manifest.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", 0): 2, ("valid", 0): 1, ("valid", 1): 1, ("test", 0): 2, ("test", 1): 3}
    normals, abnormals = manifest[manifest["label"] == 0], manifest[manifest["label"] == 1]
    assert set(normals["mask_path"]) == {""} and set(normals["defect_type"]) == {"good"}
    assert (abnormals["mask_path"] != "").all() if kind in WITH_MASKS else set(abnormals["mask_path"]) == {""}
    assert set(manifest["variant"]) == {"bmad"} and set(manifest["dataset"]) == {kind}
    for split in ("train", "valid", "test"):
        report = check_dataset(subset, kind="auto", split=split)
        assert report["kind"] == kind and report["problems"] == []


def test_brain_masks_are_rgba_and_read_from_their_colour(tmp_path: Path) -> None:
    out = _write(tmp_path, "bmad_brainmri")
    brain = out / "Brain"
    assert sorted(p.name for p in (brain / "train" / "good").iterdir())[0].endswith(".png")  # flat, as the script
    test = load_manifest(brain, "bmad_brainmri")
    abnormal = test[test["label"] == 1].iloc[0].to_dict()
    assert "/anomaly_mask/" in abnormal["mask_path"]
    raw = np.asarray(Image.open(abnormal["mask_path"]))
    assert raw.shape[2] == 4 and (raw[..., 3] == 255).all()  # plt.imsave: RGBA, alpha everywhere
    assert len(np.unique(raw[..., :3].max(axis=2))) == 3  # the script saves the label map: sub-regions, 2 levels
    assert abnormal["mask_rule"] == "label-map"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # several levels are expected: no "not binary" warning
        mask = read_mask(abnormal)
    assert 0 < mask.sum() < mask.size and np.array_equal(mask, raw[..., :3].max(axis=2) > 0)
    with pytest.warns(DataWarning, match="is not binary"):  # what the >0 rule of other masks would say
        read_mask({**abnormal, "mask_rule": ">0"})
    assert len(test[test["label"] == 0]) == 2  # good/anomaly_mask (empty masks) is not read as images


def test_slices_of_one_patient_share_a_pseudonymous_group(tmp_path: Path) -> None:
    test = load_manifest(_write(tmp_path, "bmad_brainmri"), "bmad_brainmri")
    stems = test["image_path"].map(lambda p: Path(p).stem)
    patients = stems.str.split("_").str[0]
    assert test.groupby(patients)["group_id"].nunique().max() == 1
    assert test["group_id"].nunique() == patients.nunique() < len(test)
    assert test["group_id"].str.startswith("case-").all()
    assert not any(patient in group for patient in patients for group in test["group_id"])


def test_image_level_subsets_keep_their_findings_and_formats(tmp_path: Path) -> None:
    oct2017 = load_manifest(_write(tmp_path, "bmad_oct2017"), "bmad_oct2017")
    assert oct2017["image_path"].str.endswith(".jpeg").all()  # anomalib's .png glob would miss all of them
    assert set(oct2017.loc[oct2017["label"] == 1, "defect_type"]) == {"CNV", "DME", "DRUSEN"}
    chest = load_manifest(_write(tmp_path, "bmad_chestxray"), "bmad_chestxray")
    assert set(chest.loc[chest["label"] == 1, "defect_type"]) == {"Lung_Opacity", "No-Not-Normal"}
    histo = load_manifest(_write(tmp_path, "bmad_histopathology"), "bmad_histopathology")
    names = histo["image_path"].map(lambda p: Path(p).name)
    assert names.duplicated().any() and histo["case_id"].is_unique  # good/1000.png and Ungood/1000.png


def test_mask_folder_names_img_nesting_and_val_are_all_read(tmp_path: Path) -> None:
    liver = _write(tmp_path, "bmad_liverct") / "Liver"
    assert (liver / "test" / "Ungood" / "label").is_dir() and (liver / "train" / "good" / "img").is_dir()
    (liver / "test" / "Ungood" / "label").rename(liver / "test" / "Ungood" / "anomaly_mask")
    (liver / "valid").rename(liver / "val")
    assert (load_manifest(liver, "bmad_liverct")["label"] == 1).sum() == 3
    valid = load_manifest(liver, "bmad_liverct", split="val")
    assert set(valid["split"]) == {"valid"} and len(valid) == 2
    assert len(load_manifest(liver, "bmad_liverct", split="train")) == 2


def test_unpaired_and_missing_masks_are_named(tmp_path: Path) -> None:
    resc = _write(tmp_path, "bmad_resc") / "RESC"
    masks = sorted((resc / "test" / "Ungood" / "label").iterdir())
    masks[0].unlink()
    shutil.copy(masks[1], masks[1].with_name("99_1.png"))
    (resc / "test" / "surprise").mkdir()
    report = check_dataset(resc, kind="bmad_resc")
    messages = [f"{p['path']}: {p['message']}" for p in report["problems"]]
    assert any(masks[0].stem in m and "has no mask" in m for m in messages)
    assert any("99_1.png" in m and "mask without an image" in m for m in messages)
    assert any("surprise" in m and "not a BMAD folder" in m for m in messages)
    shutil.rmtree(resc / "valid" / "Ungood" / "label")
    with pytest.raises(DataError, match=r"Ungood: has no mask folder \(label/ or anomaly_mask/\) beside img/"):
        load_manifest(resc, "bmad_resc", split="valid")
    with pytest.raises(DataError, match="BMAD has splits train, valid, test, not 'dev'"):
        load_manifest(resc, "bmad_resc", split="dev")


def test_renamed_subsets_are_recognised_by_their_file_names(tmp_path: Path) -> None:
    for kind in ("bmad_brainmri", "bmad_oct2017", "bmad_chestxray", "bmad_histopathology"):
        subset = _write(tmp_path, kind) / FOLDERS[kind]
        renamed = subset.rename(subset.with_name("my_copy"))
        assert detect_kind(renamed) == kind
    liver = _write(tmp_path, "bmad_liverct") / "Liver"
    renamed = liver.rename(liver.with_name("my_liver_copy"))  # Liver CT and RESC share their N_N names
    assert detect_kind(renamed) not in ("bmad_liverct", "bmad_resc")
    assert len(load_manifest(renamed, "bmad_liverct")) == 5  # named explicitly it reads
    brain = _write(tmp_path, "bmad_brainmri") / "Brain"
    with pytest.raises(
        DataError, match=r"Brain holds Brain MRI \(BMAD, BraTS 2021\), not Liver CT .*--kind bmad_brainmri"
    ):
        load_manifest(brain, "bmad_liverct")


def test_a_folder_holding_several_subsets_asks_which(tmp_path: Path) -> None:
    both = tmp_path / "BMAD"
    both.mkdir()
    for kind in ("bmad_brainmri", "bmad_liverct"):
        (_write(tmp_path, kind) / FOLDERS[kind]).rename(both / FOLDERS[kind])
    with pytest.raises(DataError, match=r"holds several BMAD subsets \(Brain, Liver\); point to one of them"):
        detect_kind(both)
    assert set(load_manifest(both, "bmad_liverct")["dataset"]) == {"bmad_liverct"}


def test_class_words_follow_mvfa_in_clean_mode() -> None:
    words = {
        kind: prompt_word({"dataset": kind, "class_name": catalogue()[kind].class_name}, "clean") for kind in FOLDERS
    }
    assert words == {
        "bmad_brainmri": "brain",
        "bmad_liverct": "liver",
        "bmad_resc": "retinal OCT",
        "bmad_oct2017": "retinal OCT",
        "bmad_chestxray": "chest X-ray film",
        "bmad_histopathology": "histopathological image",
    }


def test_cli_synth_and_check_a_subset_and_refuse_a_folder_of_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "BMAD"
    code, _ = run_medad(monkeypatch, capsys, "datasets", "synth", str(out), "--layout", "bmad-oct2017", "--size", "24")
    assert code == 0
    code, log = run_medad(monkeypatch, capsys, "datasets", "check", str(out), "--split", "valid", "--json")
    report = json.loads(log)
    assert code == 0 and report["kind"] == "bmad_oct2017" and (report["normal"], report["abnormal"]) == (1, 1)
    (_write(tmp_path, "bmad_chestxray") / "Chest").rename(out / "Chest")
    code, log = run_medad(monkeypatch, capsys, "datasets", "check", str(out))
    assert code == 2 and log.startswith("error: ") and "several BMAD subsets (Chest, OCT2017)" in log
    assert "Traceback" not in log and len(log.strip().splitlines()) == 1
