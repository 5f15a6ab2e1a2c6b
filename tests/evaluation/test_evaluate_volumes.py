"""Volume-level results: NIfTI volumes and DICOM series (written here) each become one case of per_volume.csv and of
the ``__volumes__`` rows, with a volume score, a 3-D Dice and metrics over volumes that a wrong grouping breaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medad.data import manifest_from_paths, read_mask
from medad.data.nifti import make_nifti
from medad.engine.predictions import PredictionWriter
from medad.errors import ConfigError
from medad.evaluation import evaluate
from medad.evaluation.volumes import VolumeScore, volume_label
from tests.export.series_files import write_series

SHAPE = (8, 6, 4)  # 4 slices along axis 2
# per volume: slice image scores, the lesion of each slice (rows 0..r of column block) and what is predicted
SCORES = {
    "a": [0.1, 0.9, 0.2, 0.5],  # abnormal; max 0.9, top-2 mean 0.7
    "b": [0.3, 0.4, 0.35, 0.6],  # normal; max 0.6, top-2 mean 0.5
    "c": [0.55, 0.5, 0.1, 0.2],  # abnormal; max 0.55, top-2 mean 0.525
    "d": [0.7, 0.1, 0.1, 0.1],  # normal; max 0.7, top-2 mean 0.4
}


def _mask(name: str) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    if name == "a":
        mask[0:2, 0:2, 1] = 1  # 4 voxels on slice 1 (found exactly)
        mask[0:4, 0:3, 2] = 1  # 12 voxels on slice 2 (missed)
    if name == "c":
        mask[2:4, 2:4, 0] = 1  # 4 voxels on slice 0 (found exactly)
    return mask


def _prediction(name: str, mask: np.ndarray) -> np.ndarray:
    """Volume ``name``'s predicted maps: slice 2 of ``a`` missed and an 8-voxel false alarm on its slice 3."""
    pred = mask.astype(np.float32)
    if name == "a":
        pred[:, :, 2] = 0.0
        pred[4:6, 2:6, 3] = 1.0
    return pred


@pytest.fixture()
def nifti_manifest(tmp_path: Path) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Four NIfTI volumes with masks (a, c abnormal) and the predicted map of every manifest row."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    predicted = {}
    for name in SCORES:
        rng = np.random.default_rng(ord(name))
        nib.save(nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), affine), images / f"{name}.nii.gz")
        mask = _mask(name)
        nib.save(nib.Nifti1Image(mask, affine), masks / f"{name}_mask.nii.gz")
        predicted[name] = _prediction(name, mask)
    manifest = make_nifti(images, masks=masks)
    maps = {}
    for i, row in manifest.iterrows():
        name, k = Path(row["image_path"]).name.split(".")[0], int(row["frame"])
        truth = read_mask(row.to_dict())
        maps[int(i)] = predicted[name][:, :, k].reshape(truth.shape)  # the slice as the reader orients it
        assert (truth == (_mask(name)[:, :, k].reshape(truth.shape) > 0)).all()
    return manifest, maps


def _write_predictions(folder: Path, manifest: pd.DataFrame, maps: dict[int, np.ndarray], score) -> None:
    with PredictionWriter(folder, chunk_size=3) as writer:
        for i in range(len(manifest)):
            writer.add([i], [score(manifest.iloc[i])], [maps[i]])


def _nifti_score(row: pd.Series) -> float:
    return SCORES[Path(row["image_path"]).name.split(".")[0]][int(row["frame"])]


def test_nifti_volumes_are_one_case_each_with_a_3d_dice_and_metrics_over_volumes(tmp_path, nifti_manifest) -> None:
    manifest, maps = nifti_manifest
    manifest = manifest.sample(frac=1.0, random_state=3).reset_index(drop=True)  # slices out of order
    maps = {}
    for i, row in manifest.iterrows():
        name, k = Path(row["image_path"]).name.split(".")[0], int(row["frame"])
        truth = read_mask(row.to_dict())
        maps[int(i)] = _prediction(name, _mask(name))[:, :, k].reshape(truth.shape)
    _write_predictions(tmp_path / "m", manifest, maps, _nifti_score)
    out = tmp_path / "eval"
    evaluate({"m": tmp_path / "m"}, manifest, out, ci={"n_resamples": 200, "seed": 1}, volume_score="max")
    table = pd.read_csv(out / "per_volume.csv")
    assert list(table.columns) == [
        "model", "dataset", "volume_id", "n_slices", "label", "volume_score", "dice", "iou", "random_weights"
    ]  # fmt: skip
    assert len(table) == 4 and (table["n_slices"] == 4).all() and table["volume_id"].str.startswith("volume-").all()
    per_image = pd.read_csv(out / "per_image.csv")
    names = manifest["image_path"].map(lambda p: Path(p).name.split(".")[0])
    ids = dict(zip(names, per_image["volume_id"], strict=True))
    by_name = table.set_index("volume_id").loc[[ids[n] for n in SCORES]]
    assert by_name["volume_score"].tolist() == pytest.approx([0.9, 0.6, 0.55, 0.7])
    assert by_name["label"].tolist() == [1, 0, 1, 0]
    # a: 4 of 16 lesion voxels found, 8 false alarms: 3-D Dice 2*4/(16+12) = 2/7 (the mean of the slices' Dice
    # would be 1/3, over the lesion slices only 1/2)
    assert by_name["dice"].iloc[0] == pytest.approx(2 / 7) and by_name["iou"].iloc[0] == pytest.approx(4 / 24)
    assert by_name["dice"].iloc[2] == pytest.approx(1.0) and np.isnan(by_name["dice"].iloc[1])
    assert (per_image["slice_order"] == manifest["frame"]).all()  # NIfTI slices in index order
    doc = json.loads((out / "metrics.json").read_text())
    rows = {r["metric"]: r for r in doc["rows"] if r["class_name"] == "__volumes__"}
    assert set(rows) == {"image_auroc", "image_ap", "image_f1_max", "dice", "iou"}
    assert {r["aggregate"] for r in rows.values()} == {"volume"} and rows["image_auroc"]["n_images"] == 4
    assert rows["image_auroc"]["value"] == pytest.approx(0.5)  # 0.9 beats both normals, 0.55 neither
    assert rows["dice"]["value"] == pytest.approx((2 / 7 + 1) / 2)
    assert rows["image_auroc"]["ci_low"] is not None
    volumes = doc["settings"]["volumes"]
    assert volumes["score"]["policy"] == "max" and volumes["n_volumes"] == 4
    assert volumes["resampling_unit"].startswith("volume") and "volume" in doc["settings"]["aggregates"]


def test_topk_mean_policy_is_recorded_and_changes_the_volume_ranking(tmp_path, nifti_manifest) -> None:
    manifest, maps = nifti_manifest
    _write_predictions(tmp_path / "m", manifest, maps, _nifti_score)
    out = tmp_path / "eval"
    evaluate({"m": tmp_path / "m"}, manifest, out, ci={"n_resamples": 0}, volume_score="topk_mean:2")
    table = pd.read_csv(out / "per_volume.csv")
    assert sorted(table["volume_score"].round(6)) == pytest.approx(sorted([0.7, 0.5, 0.525, 0.4]))
    doc = json.loads((out / "metrics.json").read_text())
    auroc = next(r for r in doc["rows"] if r["class_name"] == "__volumes__" and r["metric"] == "image_auroc")
    assert auroc["value"] == pytest.approx(1.0)  # both abnormal volumes now rank above both normals
    assert doc["settings"]["volumes"]["score"] == {
        "policy": "topk_mean", "k": 2, "definition": "mean of the 2 highest slice image scores (all slices when fewer)"
    }  # fmt: skip


def _interleaved_series(folder: Path) -> tuple[dict[Path, tuple[str, int]], list[Path]]:
    """Two series (5 and 4 slices, one with a missing slice) whose files are interleaved under shuffled names in
    one folder; returns each file's (series, slice position k) and the files."""
    where: dict[Path, tuple[str, int]] = {}
    scratch = folder.parent / "scratch"
    series = {
        "x": write_series(scratch / "x", 5, seed=1),
        "y": write_series(scratch / "y", 5, missing=(2,), iop=(1, 0, 0, 0, 1, 0), seed=2),
    }
    folder.mkdir()
    order = np.random.default_rng(7).permutation(9)
    files = [(name, k) for name, paths in series.items() for k in range(len(paths))]
    for slot, (name, k) in zip(order, files, strict=True):
        target = folder / f"f{int(slot):02d}.dcm"
        shutil.copy(series[name][k], target)
        where[target] = (name, k)
    return where, sorted(where)


def test_two_interleaved_dicom_series_are_two_volumes_in_slice_order(tmp_path) -> None:
    where, _ = _interleaved_series(tmp_path / "study")
    manifest = manifest_from_paths([tmp_path / "study"])
    key = [where[Path(p)] for p in manifest["image_path"]]
    # series x: slice k has a lesion on k in {1, 2} and score 0.1 * k; series y: normal, every slice 0.2
    masks, maps = {}, {}
    for i, (name, k) in enumerate(key):
        mask = np.zeros((12, 10), bool)
        if name == "x" and k in (1, 2):
            mask[2:5, 2:5] = True
        masks[str(manifest.at[i, "image_path"])] = mask
        maps[i] = np.where(mask, 0.9, 0.0).astype(np.float32) if k != 2 else np.zeros((12, 10), np.float32)
    manifest["label"] = pd.array([int(n == "x" and k in (1, 2)) for n, k in key], dtype="Int64")
    with PredictionWriter(tmp_path / "m", chunk_size=4) as writer:
        for i, (name, k) in enumerate(key):
            writer.add([i], [0.1 * k if name == "x" else 0.2], [maps[i]])
    out = tmp_path / "eval"
    evaluate({"m": tmp_path / "m"}, manifest, out, ci={"n_resamples": 0},
             mask_reader=lambda row: masks[str(row["image_path"])])  # fmt: skip
    per_image = pd.read_csv(out / "per_image.csv")
    series_of = dict(zip(per_image["volume_id"], (n for n, _ in key), strict=True))
    assert len(series_of) == 2
    # slice order follows the position along the normal, not the shuffled file names or InstanceNumbers
    assert per_image["slice_order"].tolist() == [k for _, k in key]
    table = pd.read_csv(out / "per_volume.csv").set_index("volume_id")
    x = next(v for v, n in series_of.items() if n == "x")
    y = next(v for v, n in series_of.items() if n == "y")
    assert table.loc[x, "n_slices"] == 5 and table.loc[y, "n_slices"] == 4
    assert table.loc[x, "volume_score"] == pytest.approx(0.4) and table.loc[y, "volume_score"] == pytest.approx(0.2)
    assert table.loc[x, "label"] == 1 and table.loc[y, "label"] == 0
    assert table.loc[x, "dice"] == pytest.approx(2 * 9 / (18 + 9))  # slice 1 found, slice 2 missed: 3-D Dice
    text = (out / "per_volume.csv").read_text() + (out / "per_image.csv").read_text()
    assert "1.2." not in text and "study" not in text  # no UID, no path


def test_plain_images_write_no_per_volume_table(tmp_path) -> None:
    manifest = pd.DataFrame(
        [{"dataset": "s", "class_name": "c", "split": "test", "image_path": f"/x/{i}.png", "mask_path": "",
          "label": i % 2, "defect_type": "", "group_id": f"g{i}", "case_id": f"c{i}"} for i in range(4)]
    )  # fmt: skip
    manifest["label"] = manifest["label"].astype("Int64")
    maps = {i: np.full((4, 4), 0.1 * i, np.float32) for i in range(4)}
    _write_predictions(tmp_path / "m", manifest, maps, lambda row: 0.5)
    evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "e", ci={"n_resamples": 0},
             mask_reader=lambda row: np.zeros((4, 4), bool))  # fmt: skip
    assert not (tmp_path / "e" / "per_volume.csv").exists()
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert not [r for r in doc["rows"] if r["class_name"] == "__volumes__"]


@pytest.mark.parametrize(
    ("spec", "policy", "k"), [("max", "max", 3), ("topk_mean", "topk_mean", 3), ("topk_mean:5", "topk_mean", 5)]
)
def test_volume_score_specs(spec: str, policy: str, k: int) -> None:
    assert VolumeScore.parse(spec) == VolumeScore(policy, k)


@pytest.mark.parametrize("spec", ["mean", "max:2", "topk_mean:0", "topk_mean:x", ""])
def test_a_wrong_volume_score_is_refused_naming_the_option(spec: str) -> None:
    with pytest.raises(ConfigError, match="--volume-score"):
        VolumeScore.parse(spec, "--volume-score")


def test_only_abnormal_volumes_give_not_applicable_rows_that_speak_of_volumes(tmp_path, nifti_manifest) -> None:
    manifest, maps = nifti_manifest
    sick = manifest["image_path"].str.contains("/a.nii|/c.nii", regex=True).to_numpy()
    manifest = manifest[sick].reset_index(drop=True)
    maps = {i: m for i, m in enumerate(m for keep, m in zip(sick, maps.values(), strict=True) if keep)}
    _write_predictions(tmp_path / "m", manifest, maps, _nifti_score)
    doc = evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "e", ci={"n_resamples": 50})
    rows = {r["metric"]: r for r in doc["rows"] if r["class_name"] == "__volumes__"}
    assert rows["image_auroc"]["status"] == "not_applicable" and rows["image_auroc"]["reason"] == "no normal volumes"
    assert rows["dice"]["value"] == pytest.approx((2 / 7 + 1) / 2) and rows["dice"]["n_images"] == 2


def test_topk_mean_of_a_short_volume_uses_every_slice_and_labels_follow_the_slices() -> None:
    assert VolumeScore("topk_mean", 5).score(np.array([0.2, 0.4])) == pytest.approx(0.3)
    assert volume_label(np.array([0, 1, -1])) == 1
    assert volume_label(np.array([0, 0])) == 0 and volume_label(np.array([0, -1])) == -1


def test_cli_refuses_a_wrong_volume_score_before_any_work(tmp_path, capsys) -> None:
    import sys

    from medad.cli import main

    argv = ["medad", "eval", str(tmp_path / "nothing"), "--data", str(tmp_path), "--volume-score", "median"]
    old, sys.argv = sys.argv, argv
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = old
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: --volume-score 'median'")
    assert "Traceback" not in err[0]


def test_protocol_key_evaluation_volume_score_keeps_default_hashes() -> None:
    from medad.protocols.loading import load_protocol
    from medad.protocols.resolve import config_hash, resolve_protocol

    demo = Path(__file__).parents[2] / "protocols" / "demo.yaml"
    default = resolve_protocol(load_protocol(demo))
    assert default.evaluation_volume_score == "max" and "evaluation_volume_score" not in default.dump()
    chosen = resolve_protocol(load_protocol(demo, ["evaluation_volume_score=topk_mean:2"]))
    assert chosen.dump()["evaluation_volume_score"] == "topk_mean:2"
    assert config_hash(chosen) != config_hash(default)
    with pytest.raises(ConfigError, match=r"evaluation_volume_score"):
        load_protocol(demo, ["evaluation_volume_score=median"])


def test_the_protocol_evaluate_stage_passes_its_volume_score(tmp_path, nifti_manifest) -> None:
    from medad.protocols.stages.evaluate import EvaluateJob

    manifest, maps = nifti_manifest
    _write_predictions(tmp_path / "m", manifest, maps, _nifti_score)
    job = EvaluateJob(folder=tmp_path / "stage", predictions={"m": tmp_path / "m"}, manifest=manifest,
                      evaluated=manifest, metrics=[], ci={"n_resamples": 0}, comparisons=[], correction="holm",
                      resolution="native", sweep=None, volume_score="topk_mean:2")  # fmt: skip
    job(None)
    doc = json.loads((tmp_path / "stage" / "evaluation" / "metrics.json").read_text())
    assert doc["settings"]["volumes"]["score"]["k"] == 2
