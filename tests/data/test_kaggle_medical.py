"""The Kaggle medical sets with normal images: HeadCT, BrainMRI (Kaggle) and Br35H, in their download layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.data import check_dataset, detect_kind, load_all_splits, load_manifest, read_image, read_mask, write_layout
from medad.data.readers import image_shape
from medad.data.registry import dataset_title
from medad.engine.predictions import PredictionWriter
from medad.errors import DataError
from medad.evaluation import evaluate
from medad.models import prompt_word


def test_headct_matches_integer_csv_ids_to_zero_padded_files(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "headct", "headct", n_normal=3, n_abnormal=2, size=24)
    csv = root / "labels.csv"
    assert csv.read_text().startswith("id, hemorrhage\n")  # the download's header: a space before hemorrhage
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # rows in another order than the files
    assert detect_kind(root) == "headct"
    manifest = load_manifest(root, "auto")
    by_file = {Path(p).name: int(label) for p, label in zip(manifest["image_path"], manifest["label"], strict=True)}
    assert by_file == {"000.png": 1, "001.png": 1, "002.png": 0, "003.png": 0, "004.png": 0}
    assert set(manifest["mask_path"]) == {""} and set(manifest["class_name"]) == {"brain"}
    assert set(manifest["defect_type"]) == {"hemorrhage", "good"}
    shapes = {image_shape(row) for row in manifest.to_dict("records")}
    assert len(shapes) == 2  # several sizes, greyscale and RGB, all read as RGB
    assert all(read_image(row).shape[2] == 3 for row in manifest.to_dict("records"))


def test_headct_names_every_bad_row_and_file(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "headct", "headct", n_normal=2, n_abnormal=2, size=24)
    images = root / "head_ct" / "head_ct"
    (images / "003.png").unlink()
    Image.new("L", (24, 24)).save(images / "250.png")
    Image.new("L", (24, 24)).save(images / "scan.png")
    with (root / "labels.csv").open("a") as handle:
        handle.write("1,0\n2,7\n")
    report = check_dataset(root, kind="headct")
    messages = [f"{p['path']}: {p['message']}" for p in report["problems"]]
    assert any("labels.csv:5" in m and "id 3 has no image 003.png" in m for m in messages)
    assert any(m.startswith(str(images / "250.png")) and "has no row in labels.csv" in m for m in messages)
    assert any(m.startswith(str(images / "scan.png")) and "not named by a labels.csv id" in m for m in messages)
    assert any("labels.csv:6" in m and "id 1 is given again (first on line 3)" in m for m in messages)
    assert any("labels.csv:7" in m and "hemorrhage is 7" in m for m in messages)
    assert report["total"] == 3
    with pytest.raises(DataError, match="problem"):
        load_manifest(root, "headct")


def test_headct_csv_without_its_columns_is_refused(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "headct", "headct", n_normal=1, n_abnormal=1, size=24)
    (root / "labels.csv").write_text("image,label\n0,1\n")
    with pytest.raises(DataError, match=r"has columns \['image', 'label'\], not 'id' and 'hemorrhage'"):
        load_manifest(root, "headct")


def test_brainmri_kaggle_reads_one_of_the_two_copies(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "download", "brainmri-kaggle", n_normal=4, n_abnormal=4, size=24)
    assert (root / "yes").is_dir() and (root / "brain_tumor_dataset" / "yes").is_dir()
    assert detect_kind(root) == "brainmri_kaggle"
    manifest = load_manifest(root)
    assert len(manifest) == 8 and manifest["image_path"].str.contains("/brain_tumor_dataset/").all()
    names = {Path(p).name for p in manifest["image_path"]}
    assert {"Y1.jpg", "Y2.JPG", "Y3.png", "1 no.jpeg", "no 2.jpg", "N3.JPG"} <= names  # extensions, spaces
    assert list(manifest["label"]) == [1, 1, 1, 1, 0, 0, 0, 0] and set(manifest["mask_path"]) == {""}
    modes = {Image.open(p).mode for p in manifest["image_path"]}
    assert modes == {"L", "RGB"}
    assert all(read_image(row).shape[2] == 3 for row in manifest.to_dict("records"))
    assert len({image_shape(row) for row in manifest.to_dict("records")}) > 1
    alone = load_manifest(root / "brain_tumor_dataset", "brainmri_kaggle")  # the copy itself as the root
    assert len(alone) == 8
    report = check_dataset(root, kind="auto")
    assert report["kind"] == "brainmri_kaggle" and report["problems"] == []


def test_br35h_pred_folder_is_never_read_as_labelled(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "Br35H", "br35h", n_normal=3, n_abnormal=4, size=24)
    assert detect_kind(root) == "br35h"
    test = load_manifest(root)
    assert not test["image_path"].str.contains("/pred/").any()
    assert sorted(test["label"].tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert len(load_all_splits(root, "br35h")) == 7  # the labelled split only
    pred = load_manifest(root, "br35h", split="pred")
    assert len(pred) == 2 and pred["label"].isna().all() and set(pred["split"]) == {"pred"}
    with pytest.raises(DataError, match=r"'test' .* and 'pred' .*, not 'train'"):
        load_manifest(root, "br35h", split="train")


def test_yes_no_folders_are_told_apart_and_others_left_alone(tmp_path: Path) -> None:
    brainmri = write_layout(tmp_path / "bm", "brainmri-kaggle", n_normal=1, n_abnormal=2, size=24)
    for folder in ("yes", "no"):  # the download's top-level copy alone: still the Kaggle BrainMRI naming
        (brainmri / "brain_tumor_dataset" / folder).rename(tmp_path / f"moved-{folder}")
    assert detect_kind(brainmri) == "brainmri_kaggle" and len(load_manifest(brainmri)) == 3
    br35h = write_layout(tmp_path / "b35", "br35h", n_normal=1, n_abnormal=2, size=24)
    (br35h / "pred").rename(tmp_path / "pred")
    assert detect_kind(br35h) == "br35h"  # y<n> names, no pred/
    other = tmp_path / "other"
    for folder in ("yes", "no"):
        (other / folder).mkdir(parents=True)
        Image.new("RGB", (24, 24)).save(other / folder / "scan1.png")
    assert detect_kind(other) == "files"


def test_kaggle_sets_name_their_source_and_use_real_class_words() -> None:
    assert dataset_title("brainmri_kaggle") == "BrainMRI (Kaggle)"
    assert dataset_title("bmad_brainmri") == "Brain MRI (BMAD, BraTS 2021)"
    assert dataset_title("headct") == "HeadCT (Kaggle)" and dataset_title("br35h") == "Br35H (Kaggle)"
    assert dataset_title("mvtec") == "mvtec" and dataset_title("nothing") == "nothing"
    row = {"dataset": "headct", "class_name": "brain", "image_path": "/d/HeadCT/head_ct/head_ct/000.png"}
    assert prompt_word(row, "clean") == "brain"
    assert prompt_word(row, "reference") == "HeadCT"  # not in the release: its path rule (4th-last component)


def test_image_level_set_gives_image_metrics_and_pixel_metrics_not_applicable(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "Br35H", "br35h", n_normal=4, n_abnormal=4, size=24)
    manifest = load_manifest(root)
    rng = np.random.default_rng(0)
    with PredictionWriter(tmp_path / "pred", chunk_size=4) as writer:
        for index, row in enumerate(manifest.to_dict("records")):
            score = float(row["label"]) + rng.random() * 0.5
            writer.add([index], [score], [np.full(image_shape(row), score / 2, dtype=np.float32)])
    assert not any(read_mask(row).any() for row in manifest.to_dict("records"))
    evaluate({"m": tmp_path / "pred"}, manifest, tmp_path / "eval", ci={"n_resamples": 20, "seed": 0})
    rows = json.loads((tmp_path / "eval" / "metrics.json").read_text())["rows"]
    pooled = {r["metric"]: r for r in rows if r["class_name"] == "brain"}
    assert pooled["image_auroc"]["status"] == "ok" and pooled["image_auroc"]["value"] == 1.0
    assert pooled["pixel_auroc"]["status"] == "not_applicable"
    assert "no anomalous pixels" in pooled["pixel_auroc"]["reason"]
