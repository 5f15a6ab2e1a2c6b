"""A CSV of images and masks without labels: labels read from the masks, said; nothing to evaluate is refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.data import check_dataset, load_manifest
from medad.data.labels import LabelsInferred, check_evaluable
from medad.errors import DataError, DataWarning


def _csv(root: Path, masks: bool = True, n: int = 4) -> Path:
    """n images; with masks, the odd ones hold a lesion and the even ones are empty."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["image_path,mask_path" if masks else "image_path"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255 * (i % 2)
        Image.fromarray(mask).save(root / f"img{i}_mask.png")
        lines.append(f"img{i}.png,img{i}_mask.png" if masks else f"img{i}.png")
    (root / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "data.csv"


def test_labels_are_read_from_the_masks_and_said(tmp_path):
    path = _csv(tmp_path)
    with pytest.warns(LabelsInferred, match=r"data\.csv gives no label for 4 image\(s\).*2 abnormal.*2 normal"):
        manifest = load_manifest(path, "csv")
    assert manifest["label"].tolist() == [0, 1, 0, 1]


def test_inferred_labels_are_not_a_problem_of_the_check(tmp_path):
    with pytest.warns(LabelsInferred):
        report = check_dataset(_csv(tmp_path), "csv")
    assert (report["normal"], report["abnormal"], report["unknown"], report["problems"]) == (2, 2, 0, [])


def test_an_explicit_label_is_kept(tmp_path):
    path = _csv(tmp_path)
    path.write_text("image_path,mask_path,label\nimg0.png,img0_mask.png,1\nimg1.png,img1_mask.png,\n")
    with pytest.warns(LabelsInferred, match=r"no label for 1 image"):
        assert load_manifest(path, "csv")["label"].tolist() == [1, 1]


def test_a_csv_of_images_only_warns_nothing_but_cannot_be_evaluated(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        manifest = load_manifest(_csv(tmp_path, masks=False), "csv")
    with pytest.raises(DataError, match=r"none of the 4 images has a label or a mask.*label"):
        check_evaluable(manifest)


def test_eval_of_a_csv_without_labels_or_masks_exits_2(tmp_path, monkeypatch, capsys):
    from tests.cli import run_medad

    path = _csv(tmp_path / "d", masks=False, n=2)
    out = tmp_path / "score"
    code, text = run_medad(monkeypatch, capsys, "score", str(path), "--kind", "csv", "--out", str(out), "--model",
                           "ad_dinov3_tiny", "--no-heatmaps")  # fmt: skip
    assert code == 0, text
    code, text = run_medad(monkeypatch, capsys, "eval", str(out / "predictions"), "--data", str(path), "--kind", "csv",
                           "--ci-resamples", "0")  # fmt: skip
    assert code == 2 and "error: none of the 2 images has a label or a mask" in text and "Traceback" not in text
