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


def test_looping_images_given_to_score_are_named_not_dropped(tmp_path):
    root = write_layout(tmp_path / "d", "folder", n_normal=0, n_abnormal=3)
    _loop(root / "images" / "img001.png")
    manifest = manifest_from_paths([root / "images"], strict=False)
    assert len(manifest) == 2
    assert [(Path(p.path).name, LOOP in p.message) for p in manifest.attrs["problems"]] == [("img001.png", True)]
    with pytest.raises(DataError, match=LOOP):
        manifest_from_paths([root / "images" / "img001.png"])
    with pytest.raises(DataError, match=LOOP):
        load_manifest(root, "folder")
