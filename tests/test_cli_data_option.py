"""`--data-option KEY=VALUE`: a dataset kind's reader options from the command line, read as a protocol's
``options:`` (YAML scalars), refused before any work when malformed, unknown to the kind, given twice or already set
by another option; with it, `medad eval --kind nifti` finds the mask volumes and writes volume metrics."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medad.data.options import check_reader_options, parse_reader_options
from medad.errors import ConfigError, DataError
from tests.cli import run_medad

SHAPE = (32, 32, 3)  # 3 slices of 32x32 along axis 2


@pytest.fixture()
def volumes(tmp_path: Path) -> tuple[Path, Path]:
    """Two NIfTI volumes (``a`` with a lesion on slice 1, ``b`` normal) and their masks in another folder."""
    images, masks = tmp_path / "volumes", tmp_path / "labels"
    images.mkdir()
    masks.mkdir()
    for seed, name in enumerate("ab"):
        data = np.random.default_rng(seed).random(SHAPE).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), images / f"{name}.nii.gz")
        mask = np.zeros(SHAPE, np.uint8)
        if name == "a":
            mask[8:20, 8:20, 1] = 1
        nib.save(nib.Nifti1Image(mask, np.eye(4)), masks / f"{name}_mask.nii.gz")
    return images, masks


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


def test_values_are_read_as_yaml_scalars_like_a_protocols_options() -> None:
    items = ["axis=0", "medical=true", "masks=/data/my masks", "classes=[brain, liver]", "class_name='2021'", "x="]
    assert parse_reader_options(items) == {
        "axis": 0,
        "medical": True,
        "masks": "/data/my masks",
        "classes": ["brain", "liver"],
        "class_name": "2021",
        "x": None,
    }


@pytest.mark.parametrize(
    ("items", "taken", "words"),
    [
        (["masks"], {}, ["'masks' is not KEY=VALUE", "--data-option masks=/data/masks"]),
        (["=x"], {}, ["is not KEY=VALUE"]),
        (["axis=1", "axis=2"], {}, ["--data-option axis is given twice"]),
        (["split=train"], {"split": "--split"}, ["--data-option split=... and --split", "drop one"]),
        (["masks=[a"], {}, ["masks=[a", "not valid YAML"]),
        (["classes={a: 1}"], {}, ["scalar or a list of scalars"]),
    ],
)
def test_malformed_repeated_or_taken_items_are_refused(items, taken, words) -> None:
    with pytest.raises(ConfigError) as info:
        parse_reader_options(items, taken)
    assert all(word in str(info.value) for word in words), info.value


def test_an_unknown_key_is_refused_after_auto_detection_naming_the_kind_and_its_keys(volumes) -> None:
    images, _ = volumes
    check_reader_options(images, "auto", {"masks": "m", "axis": 0})  # the keys of the detected kind (nifti)
    with pytest.raises(DataError) as info:
        check_reader_options(images, "auto", {"images_dir": "x"})
    assert "['images_dir']" in str(info.value) and "'nifti'" in str(info.value) and "'masks'" in str(info.value)


def test_eval_of_nifti_volumes_finds_the_masks_given_by_data_option(tmp_path, volumes, monkeypatch, capsys) -> None:
    images, masks = volumes
    common = ["--kind", "nifti", "--model", "ad_dinov3_tiny", "--device", "cpu", "--no-heatmaps"]
    code, text = run_medad(monkeypatch, capsys, "score", str(images), "--out", str(tmp_path / "plain"), *common)
    assert code == 0, text
    evaluate = ["--data", str(images), "--kind", "nifti", "--ci-resamples", "0"]
    code, text = run_medad(monkeypatch, capsys, "eval", str(tmp_path / "plain" / "predictions"), *evaluate)
    assert code == 2 and "has a label or a mask" in _one_error_line(text)  # no labels without the masks folder

    labelled = ["--data-option", f"masks={masks}"]  # the masks arrive after scoring: the same images, not rescored
    out = tmp_path / "eval"
    code, text = run_medad(
        monkeypatch, capsys, "eval", str(tmp_path / "plain" / "predictions"), *evaluate, *labelled, "--out", str(out)
    )
    assert code == 0, text
    table = pd.read_csv(out / "per_volume.csv")
    assert len(table) == 2 and sorted(table["label"]) == [0, 1] and (table["n_slices"] == 3).all()
    assert table["volume_score"].notna().all() and table["dice"].notna().all()
    rows = [r for r in json.loads((out / "metrics.json").read_text())["rows"] if r["class_name"] == "__volumes__"]
    assert {r["metric"] for r in rows} >= {"image_auroc", "dice"}
    other = ["--data", str(images), "--kind", "nifti", "--data-option", "axis=0", "--ci-resamples", "0", *labelled]
    code, text = run_medad(monkeypatch, capsys, "eval", str(tmp_path / "plain" / "predictions"), *other)
    line = _one_error_line(text)  # other slices (another axis): other images, refused; the fix names the options
    assert code == 2 and "scored from other images" in line and "--data-option" in line
    assert all(r["status"] == "ok" and r["value"] is not None for r in rows)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--data-option", "mask=M"], ["['mask']", "dataset kind 'nifti'", "'masks'", "'axis'"]),
        (["--data-option", "masks"], ["--data-option 'masks' is not KEY=VALUE"]),
        (["--data-option", "axis=0", "--data-option", "axis=1"], ["--data-option axis is given twice"]),
    ],
)
def test_score_refuses_a_bad_data_option_before_making_its_output_folder(
    tmp_path, volumes, monkeypatch, capsys, extra, words
) -> None:
    images, _ = volumes
    out = tmp_path / "out"
    args = ["score", str(images), "--kind", "nifti", "--model", "ad_dinov3_tiny", "--out", str(out), *extra]
    code, text = run_medad(monkeypatch, capsys, *args)
    line = _one_error_line(text)
    assert code == 2 and all(word in line for word in words), line
    assert not out.exists()  # refused before the lock file, the model and any scoring


def test_score_refuses_a_data_option_without_a_kind(tmp_path, volumes, monkeypatch, capsys) -> None:
    images, _ = volumes
    args = ["score", str(images), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "o"), "--data-option", "axis=0"]
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "add --kind KIND" in _one_error_line(text) and not (tmp_path / "o").exists()


def test_eval_refuses_an_unknown_key_of_the_detected_kind(tmp_path, volumes, monkeypatch, capsys) -> None:
    images, _ = volumes
    args = ["eval", str(tmp_path / "none"), "--data", str(images), "--data-option", "mask_dir=x"]
    code, text = run_medad(monkeypatch, capsys, *args)
    line = _one_error_line(text)
    assert code == 2 and "['mask_dir']" in line and "'nifti'" in line and "'masks'" in line


def test_a_shorthand_and_the_same_data_option_are_refused_together(tmp_path, monkeypatch, capsys) -> None:
    args = ["eval", str(tmp_path), "--data", str(tmp_path), "--masks-dir", "gt", "--data-option", "masks=gt"]
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "--data-option masks=... and --masks-dir" in _one_error_line(text)
    args = ["datasets", "check", str(tmp_path), "--data-root", str(tmp_path), "--data-option", f"root={tmp_path}"]
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "--data-option root=... and --data-root" in _one_error_line(text)


def test_datasets_check_reads_with_data_options(volumes, monkeypatch, capsys) -> None:
    images, masks = volumes
    args = ["datasets", "check", str(images), "--kind", "nifti", "--json", "--data-option", f"masks={masks}"]
    code, text = run_medad(monkeypatch, capsys, *args, "--data-option", "axis=2")
    assert code == 0, text
    report = json.loads(text[text.index("{") :])
    assert report["abnormal"] == 1 and report["normal"] == 5 and report["unknown"] == 0, text
