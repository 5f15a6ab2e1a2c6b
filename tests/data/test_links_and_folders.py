"""Symbolic link loops are named as such (issue 22, 5); a researcher's own image/mask folders (issue 23, 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medad.data import check_dataset, load_manifest, manifest_from_paths, write_layout
from medad.errors import DataError

LOOP = "is a symbolic link loop"


def _loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)


def test_a_looping_mask_is_a_link_loop_not_a_missing_mask(tmp_path):
    root = write_layout(tmp_path / "d", "folder", n_normal=1, n_abnormal=2)
    _loop(root / "masks" / "img001.png")
    report = check_dataset(root, "folder")
    assert [(Path(p["path"]).name, LOOP in p["message"]) for p in report["problems"]] == [("img001.png", True)]
    assert "has no mask" not in str(report["problems"])


def test_a_looping_mask_folder_is_named_once(tmp_path):
    root = write_layout(tmp_path / "d", "mvtec", n_normal=1, n_abnormal=2, classes=["bottle"])
    folder = next((root / "bottle" / "ground_truth").iterdir())
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    os.symlink(folder.name, folder)
    problems = check_dataset(root, "mvtec")["problems"]
    assert len(problems) == 1 and LOOP in problems[0]["message"] and problems[0]["path"] == str(folder)


def test_looping_images_given_to_score_are_named_not_dropped_silently(tmp_path):
    root = write_layout(tmp_path / "d", "folder", n_normal=0, n_abnormal=3)
    _loop(root / "images" / "img001.png")
    from medad.errors import DataWarning

    with pytest.warns(DataWarning, match=rf"img001\.png {LOOP}.*left out"):
        manifest = manifest_from_paths([root / "images"])
    assert len(manifest) == 2
    with pytest.raises(DataError, match=LOOP):
        manifest_from_paths([root / "images" / "img001.png"])
    with pytest.raises(DataError, match=LOOP):
        load_manifest(root, "folder")


def _own_folder(root: Path, images: str = "imgs", masks: str = "masks", n: int = 4) -> Path:
    """A researcher's folder: n images and n masks (odd ones with a lesion) under the given names."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in (images, masks):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / images / f"case{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[4:12, 4:12] = 255
        Image.fromarray(mask).save(root / masks / f"case{i}.png")
    return root


@pytest.mark.parametrize(("images", "masks"), [("imgs", "masks"), ("images", "masks"), ("image", "mask")])
def test_auto_finds_a_researchers_image_and_mask_folders(tmp_path, images, masks):
    root = _own_folder(tmp_path / "study", images, masks)
    report = check_dataset(root)
    assert (report["kind"], report["total"], report["abnormal"], report["problems"]) == ("folder", 4, 4, [])


def test_auto_finds_mask_files_beside_their_images(tmp_path):
    root = _own_folder(tmp_path / "flat")
    for i in range(4):
        (root / "masks" / f"case{i}.png").rename(root / "imgs" / f"case{i}_mask.png")
    (root / "masks").rmdir()
    manifest = load_manifest(root / "imgs")
    assert manifest["dataset"].unique().tolist() == ["folder"] and len(manifest) == 4
    assert [Path(p).name for p in manifest["mask_path"]] == [f"case{i}_mask.png" for i in range(4)]


def test_folder_names_not_found_name_the_options(tmp_path):
    root = _own_folder(tmp_path / "s", "pics", "seg")
    with pytest.raises(DataError, match=r"folders there: \['pics', 'seg'\].*--images-dir/--masks-dir"):
        load_manifest(root, "folder")
    with pytest.raises(DataError, match=r"images folder .*nope does not exist .*--images-dir/--masks-dir"):
        load_manifest(root, "folder", images="nope")
    assert len(load_manifest(root, "folder", images="pics", masks="seg")) == 4


def test_scoring_a_folder_of_images_and_masks_as_files_warns(tmp_path):
    from medad.errors import DataWarning

    root = _own_folder(tmp_path / "study")
    with pytest.warns(DataWarning, match=r"imgs/ \+ masks/.*masks are scored as images too.*--kind folder"):
        manifest_from_paths([root])


def test_cli_takes_images_dir_and_masks_dir(tmp_path, monkeypatch, capsys):
    from tests.cli import run_medad

    root = _own_folder(tmp_path / "s", "pics", "seg")
    code, out = run_medad(monkeypatch, capsys, "datasets", "check", str(root), "--kind", "folder")
    assert code == 2 and "--images-dir/--masks-dir" in out and "Traceback" not in out
    code, out = run_medad(monkeypatch, capsys, "datasets", "check", str(root), "--images-dir", "pics",
                          "--masks-dir", "seg")  # fmt: skip
    assert code == 0 and "images: 4 (normal 0, abnormal 4" in out
    code, out = run_medad(monkeypatch, capsys, "datasets", "check", str(root), "--kind", "isic", "--images-dir", "x")
    assert code == 2 and "error: --images-dir/--masks-dir name the folders of --kind folder" in out


def test_score_with_images_dir_scores_only_the_images(tmp_path, monkeypatch, capsys):
    from tests.cli import run_medad

    root = _own_folder(tmp_path / "s", "pics", "seg", n=2)
    code, out = run_medad(monkeypatch, capsys, "score", str(root), "--out", str(tmp_path / "o"), "--model",
                          "ad_dinov3_tiny", "--images-dir", "pics", "--masks-dir", "seg", "--no-heatmaps")  # fmt: skip
    assert code == 0, out
    assert "scored 2 images" in out


def test_an_empty_mask_in_a_folder_means_normal_and_is_said(tmp_path):
    import numpy as np
    from PIL import Image

    from medad.data.labels import LabelsInferred

    root = _own_folder(tmp_path / "study")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "case1.png")
    with pytest.warns(LabelsInferred, match=r"1 image\(s\) have an empty mask and are read as normal"):
        report = check_dataset(root)
    assert (report["normal"], report["abnormal"], report["problems"]) == (1, 3, [])
