"""Every native layout and variant, written synthetically, becomes the right manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medad.data import (
    check_dataset,
    detect_kind,
    load_manifest,
    manifest_from_paths,
    read_image,
    read_mask,
    write_layout,
)
from medad.data.manifest import COLUMNS
from medad.data.mvtec_style import make_mvtec_style
from medad.data.tabular import make_csv
from medad.errors import DataError

# layout -> (kind, variant, class names, normal count, abnormal count) with n_normal=2, n_abnormal=3
EXPECTED = {
    "mvtec": ("mvtec", "mvtec", {"bottle", "grid"}, 4, 6),
    "mpdd": ("mpdd", "mvtec", {"tubes", "connector"}, 4, 6),
    "btad": ("btad", "btech", {"01", "02", "03"}, 6, 9),
    "visa": ("visa", "native-csv", {"candle", "pcb1"}, 4, 6),
    "visa-meta": ("visa", "meta-json", {"candle", "pcb1"}, 4, 6),
    "mvtec_style": ("mvtec_style", "mvtec-style", {"skin"}, 2, 3),
    "isic2016": ("isic", "isic2016", {"skin_lesion"}, 0, 3),
    "isic2017": ("isic", "isic2017", {"skin_lesion"}, 0, 3),
    "isic2018": ("isic", "isic2018", {"skin_lesion"}, 0, 3),
    "clinicdb-tiff": ("clinicdb", "original-tiff", {"polyp"}, 0, 3),
    "clinicdb-png": ("clinicdb", "png", {"polyp"}, 0, 3),
    "colondb-pranet": ("colondb", "pranet", {"polyp"}, 0, 3),
    "colondb-bmp": ("colondb", "original-bmp", {"polyp"}, 0, 3),
    "tn3k": ("tn3k", "tn3k", {"thyroid_nodule"}, 0, 3),
    "kvasir": ("kvasir", "kvasir-seg", {"polyp"}, 0, 3),
    "isic-anomalyclip": ("isic", "anomalyclip-skin", {"skin_lesion"}, 0, 3),
    "folder": ("folder", "folder", {"object"}, 2, 3),
}


def _stem(path: str) -> str:
    name = Path(path).name.split(".")[0].lower()
    for suffix in ("_mask", "_segmentation"):
        name = name.removesuffix(suffix)
    return name.removeprefix("p") if name[1:].isdigit() and name.startswith("p") else name


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_layout_manifest(tmp_path: Path, layout: str) -> None:
    kind, variant, classes, n_normal, n_abnormal = EXPECTED[layout]
    root = write_layout(tmp_path / layout, layout, n_normal=2, n_abnormal=3, size=32, seed=1)
    assert detect_kind(root) == kind
    manifest = load_manifest(root, kind)
    assert list(manifest.columns) == list(COLUMNS)
    assert manifest.index.equals(pd.RangeIndex(len(manifest)))
    assert str(manifest["label"].dtype) == "Int64" and str(manifest["frame"].dtype) == "Int64"
    assert set(manifest["variant"]) == {variant}
    assert set(manifest["class_name"]) == classes
    assert int((manifest["label"] == 0).sum()) == n_normal
    assert int((manifest["label"] == 1).sum()) == n_abnormal
    assert manifest["case_id"].str.match(r"^case-[0-9a-f]{12}$").all() and manifest["case_id"].is_unique
    abnormal = manifest[manifest["label"] == 1]
    assert (abnormal["mask_path"] != "").all()
    for _, row in abnormal.iterrows():
        assert _stem(row["mask_path"]) == _stem(row["image_path"])
        mask = read_mask(row)
        assert mask.dtype == bool and mask.any() and mask.shape == read_image(row).shape[:2]
    for _, row in manifest[manifest["label"] == 0].iterrows():
        assert not read_mask(row).any()
    report = check_dataset(root, "auto")
    assert report["problems"] == [] and report["total"] == len(manifest) and report["variant"] == variant


def test_visa_jpg_images_and_non_binary_masks(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "visa", "visa", size=32)
    manifest = load_manifest(root, "visa")
    assert all(p.endswith(".JPG") for p in manifest["image_path"])
    row = manifest[manifest["label"] == 1].iloc[0]
    raw = np.asarray(Image.open(row["mask_path"]))
    assert 0 < raw.max() < 128, "the synthetic VisA mask must use small label values like the real one"
    assert row["mask_rule"] == ">0"
    assert np.array_equal(read_mask(row), raw > 0)


def test_btad_mixed_extensions_pair_by_stem(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "btad", "btad", size=32)
    manifest = load_manifest(root, "btad")
    ext = {c: {Path(p).suffix for p in g["image_path"]} for c, g in manifest.groupby("class_name")}
    assert ext == {"01": {".bmp"}, "02": {".png"}, "03": {".bmp"}}
    masks_03 = manifest[(manifest["class_name"] == "03") & (manifest["label"] == 1)]["mask_path"]
    assert all(p.endswith(".bmp") for p in masks_03)
    assert set(manifest[manifest["label"] == 0]["defect_type"]) == {"ok"}


def test_isic_case_of_segmentation_suffix_and_superpixels(tmp_path: Path) -> None:
    r16 = write_layout(tmp_path / "a", "isic2016", size=32)
    r17 = write_layout(tmp_path / "b", "isic2017", size=32)
    m16, m17 = load_manifest(r16, "isic"), load_manifest(r17, "isic")
    assert all(p.endswith("_Segmentation.png") for p in m16["mask_path"])
    assert all(p.endswith("_segmentation.png") for p in m17["mask_path"])
    assert not any("superpixels" in p for p in m17["image_path"]) and len(m17) == 3


def test_tn3k_jpeg_masks_thresholded_above_127(tmp_path: Path) -> None:
    root = tmp_path / "tn3k"
    yy, xx = np.mgrid[0:48, 0:64]
    truth = (yy - 24) ** 2 + (xx - 30) ** 2 <= 12**2
    (root / "test-image").mkdir(parents=True)
    (root / "test-mask").mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(root / "test-image" / "0001.jpg", quality=90)
    Image.fromarray(truth.astype(np.uint8) * 255).save(root / "test-mask" / "0001.jpg", quality=60)
    row = load_manifest(root, "tn3k").iloc[0]
    assert row["mask_rule"] == ">127"
    mask = read_mask(row)
    raw = np.asarray(Image.open(row["mask_path"]).convert("L"))
    assert (raw > 0).sum() > truth.sum() + 20, "JPEG ringing must make a >0 rule overcount"
    assert np.logical_xor(mask, truth).sum() <= 0.05 * truth.sum()


def test_clinicdb_tiff_read_in_height_width_order(tmp_path: Path) -> None:
    root = tmp_path / "clinic"
    (root / "Original").mkdir(parents=True)
    (root / "Ground Truth").mkdir()
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    mask = np.zeros((30, 50), np.uint8)
    mask[5:10, 20:40] = 255
    Image.fromarray(image).save(root / "Original" / "1.tif")
    Image.fromarray(mask).save(root / "Ground Truth" / "1.tif")
    row = load_manifest(root, "clinicdb").iloc[0]
    assert row["variant"] == "original-tiff"
    assert np.allclose(read_image(row), image / 255.0, atol=1e-6)
    assert np.array_equal(read_mask(row), mask > 0)


def test_pairing_by_stem_when_a_file_is_missing(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "colon", "colondb-pranet", n_abnormal=4, size=32)
    (root / "masks" / "2.png").unlink()
    manifest = load_manifest(root, "colondb", strict=False)
    assert sorted(Path(p).name for p in manifest["image_path"]) == ["1.png", "3.png", "4.png"]
    assert all(Path(i).name == Path(m).name for i, m in zip(manifest["image_path"], manifest["mask_path"], strict=True))
    problems = manifest.attrs["problems"]
    assert len(problems) == 1 and problems[0].path.endswith("images/2.png")
    with pytest.raises(DataError, match=r"images/2\.png.*has no mask"):
        load_manifest(root, "colondb")


def test_mvtec_style_medical_option(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "style", "mvtec_style", size=32)
    manifest = make_mvtec_style(root, medical="tn3k")
    assert set(manifest["dataset"]) == {"tn3k"} and set(manifest["class_name"]) == {"thyroid_nodule"}
    with pytest.raises(DataError, match="unknown medical set"):
        make_mvtec_style(root, medical="brain")


def test_csv_round_trip_and_paths(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    manifest = load_manifest(root, "mvtec")
    manifest.to_csv(tmp_path / "m.csv", index=False)
    again = make_csv(tmp_path / "m.csv")
    assert again["image_path"].tolist() == manifest["image_path"].tolist()
    assert again["label"].tolist() == manifest["label"].tolist()
    assert again["mask_path"].tolist() == manifest["mask_path"].tolist()
    files = manifest_from_paths([root / "bottle" / "test"])
    assert len(files) == 5 and files["label"].isna().all()


def test_a_csv_with_only_its_header_is_named(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("image_path,label\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"CSV manifest .*list\.csv has a header but no rows"):
        make_csv(tmp_path / "list.csv")


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    a = write_layout(tmp_path / "a", "mvtec", size=32, seed=3)
    b = write_layout(tmp_path / "b", "mvtec", size=32, seed=3)
    c = write_layout(tmp_path / "c", "mvtec", size=32, seed=4)
    rel = "bottle/test/defect/000.png"
    assert (a / rel).read_bytes() == (b / rel).read_bytes() != (c / rel).read_bytes()


def test_visa_pytorch_and_meta_json_do_not_change_the_detected_kind(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "visa_pytorch", "mvtec", size=32, classes=("candle", "pcb1"))
    assert detect_kind(root) == "visa"
    assert set(load_manifest(root, "auto")["variant"]) == {"visa-pytorch"}
    mvtec = write_layout(tmp_path / "mv", "mvtec", size=32)
    (mvtec / "meta.json").write_text('{"train": {}, "test": {}}')  # what AnomalyCLIP's generator leaves there
    assert detect_kind(mvtec) == "mvtec"
