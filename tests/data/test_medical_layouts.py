"""Kvasir-SEG and AnomalyCLIP's ISIC copy: root forms, JPEG mask threshold, pairing by name, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.data import detect_kind, load_manifest, read_mask, write_layout
from medad.data.isic import make_isic
from medad.data.kvasir import make_kvasir
from medad.data.metajson import read_meta_json
from medad.errors import DataError


def test_kvasir_root_forms_and_jpeg_masks(tmp_path: Path) -> None:
    out = write_layout(tmp_path / "kv", "kvasir", n_abnormal=3, size=48)
    assert (out / "Kvasir-SEG" / "kavsir_bboxes.json").is_file()
    parent, inner = make_kvasir(out), make_kvasir(out / "Kvasir-SEG")
    assert detect_kind(out / "Kvasir-SEG") == "kvasir"
    assert parent["image_path"].tolist() == inner["image_path"].tolist()
    assert parent["case_id"].tolist() == inner["case_id"].tolist()
    assert set(parent["label"]) == {1} and set(parent["mask_rule"]) == {">127"}
    grew = False
    for _, row in parent.iterrows():
        raw = np.asarray(Image.open(row["mask_path"]).convert("L"))
        assert np.array_equal(read_mask(row), raw > 127)
        grew |= bool((raw > 0).sum() > (raw > 127).sum())
    assert grew, "JPEG ringing must make a >0 rule overcount on some mask"


def test_kvasir_pranet_png_copy(tmp_path: Path) -> None:
    root = tmp_path / "TestDataset" / "Kvasir"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    mask = np.zeros((20, 24), np.uint8)
    mask[4:9, 5:15] = 255
    Image.fromarray(np.full((20, 24, 3), 80, np.uint8)).save(root / "images" / "cju1.png")
    Image.fromarray(mask).save(root / "masks" / "cju1.png")
    assert detect_kind(root) == "kvasir"
    row = load_manifest(root, "kvasir").iloc[0]
    assert row["variant"] == "pranet" and row["mask_rule"] == ">0"
    assert np.array_equal(read_mask(row), mask > 0)


def test_kvasir_pairs_by_name_and_names_every_unpaired_file(tmp_path: Path) -> None:
    out = write_layout(tmp_path / "kv", "kvasir", n_abnormal=4, size=32)
    images = sorted((out / "Kvasir-SEG" / "images").iterdir())
    masks = out / "Kvasir-SEG" / "masks"
    (masks / images[0].name).unlink()  # index pairing of sorted listings would now shift every pair
    manifest = make_kvasir(out, strict=False)
    assert len(manifest) == 3
    assert all(Path(i).name == Path(m).name for i, m in zip(manifest["image_path"], manifest["mask_path"], strict=True))
    with pytest.raises(DataError, match=rf"{images[0].name}: has no mask"):
        make_kvasir(out)
    (masks / images[1].name).rename(masks / "orphan.jpg")
    with pytest.raises(DataError, match=r"3 problem\(s\)") as info:
        make_kvasir(out)
    assert "orphan.jpg: is a mask without an image" in str(info.value)
    assert f"{images[1].name}: has no mask" in str(info.value)
    shutil.rmtree(masks)
    with pytest.raises(DataError, match=r"masks: is missing"):
        make_kvasir(out)


def test_isic_anomalyclip_root_forms_meta_and_normals(tmp_path: Path) -> None:
    out = write_layout(tmp_path / "isic", "isic-anomalyclip", n_abnormal=3, size=32)
    assert (out / "meta.json").is_file() and detect_kind(out) == "isic" and detect_kind(out / "skin") == "isic"
    parent, skin = make_isic(out), make_isic(out / "skin")
    assert parent["image_path"].tolist() == skin["image_path"].tolist()
    assert parent["case_id"].tolist() == skin["case_id"].tolist()
    assert set(parent["defect_type"]) == {"anomaly"}
    assert all(m.endswith("_Segmentation.png") for m in parent["mask_path"])
    from_meta = read_meta_json(out, dataset="isic")  # the meta.json AnomalyCLIP wrote agrees with the folders
    pairs = dict(zip(parent["image_path"], parent["mask_path"], strict=True))
    assert dict(zip(from_meta["image_path"], from_meta["mask_path"], strict=True)) == pairs
    good = out / "skin" / "test" / "good"
    good.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good / "ISIC_0009999.jpg")
    manifest = make_isic(out)
    normal = manifest[manifest["label"] == 0]
    assert len(normal) == 1 and normal.iloc[0]["mask_path"] == "" and normal.iloc[0]["defect_type"] == "good"


def test_isic_anomalyclip_errors(tmp_path: Path) -> None:
    out = write_layout(tmp_path / "isic", "isic-anomalyclip", n_abnormal=3, size=32)
    ground_truth = out / "skin" / "ISBI2016_ISIC_Part1_Test_GroundTruth"
    (ground_truth / "ISIC_0000001_Segmentation.png").unlink()
    with pytest.raises(DataError, match=r"ISIC_0000001\.jpg: has no mask"):
        make_isic(out)
    shutil.rmtree(ground_truth)
    with pytest.raises(
        DataError, match=r"AnomalyCLIP.s skin/test/<type>/ with .*ISBI2016_ISIC_Part1_Test_GroundTruth\)"
    ):
        make_isic(out)
