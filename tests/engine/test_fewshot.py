"""Few-shot scoring through the library and ``medad score``: every model, the fusion rule, records, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medad.engine.predictions import PredictionReader
from medad.engine.scorer import score_files
from medad.errors import ConfigError, DataError
from medad.models import list_models
from medad.models.registry import model_class
from tests.cli import run_medad
from tests.engine.test_references import write_pngs

TINY = [name for name in list_models() if name.endswith("_tiny")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two normal reference PNGs and two target PNGs of other sizes."""
    root = tmp_path_factory.mktemp("fewshot")
    return write_pngs(root / "normals", 2, seed=1, size=36), write_pngs(root / "targets", 2, seed=2, size=44)


@pytest.mark.parametrize("name", TINY)
def test_every_model_scores_few_shot(tmp_path, folders, name):
    normals, targets = folders
    out = tmp_path / "out"
    table = score_files([targets], out, model_name=name, references=[normals], shots=2, device="cpu", progress=False)
    assert len(table) == 2
    reader = PredictionReader(out / "predictions")
    record = reader.meta["references"]
    own_radii = model_class(name).fewshot_radii
    assert record["shots"] == 2 and len(record["case_ids"]) == 2
    assert record["radii"] == list(own_radii or (1, 3, 5))
    assert 0.0 <= record["weight"] <= 1.0
    for _, pixel_map in reader.iter_maps():
        assert pixel_map.shape == (44, 44)
        assert np.isfinite(pixel_map).all() and 0.0 <= pixel_map.min() <= pixel_map.max() <= 1.0
    assert np.isfinite(reader.image_scores).all()
    private = pd.read_csv(out / "private" / "predictions.references.csv")
    assert sorted(Path(p).name for p in private["image_path"]) == ["ref_0.png", "ref_1.png"]
    shared = "".join(p.read_text() for p in (out / "predictions").glob("*.json"))
    assert str(normals) not in shared and "ref_0" not in shared


def _maps(out: Path) -> np.ndarray:
    return np.stack([m for _, m in PredictionReader(out / "predictions").iter_maps()])


def test_the_fused_map_follows_the_weight(tmp_path, folders):
    normals, targets = folders
    common = {"model_name": "ad_dinov3_tiny", "device": "cpu", "progress": False}
    score_files([targets], tmp_path / "zero", **common)
    score_files([targets], tmp_path / "w0", references=[normals], shots=2, fewshot_weight=0.0, **common)
    score_files([targets], tmp_path / "w1", references=[normals], shots=2, fewshot_weight=1.0, **common)
    score_files([targets], tmp_path / "half", references=str(normals), shots=2, fewshot_weight=0.5, **common)
    zero, w0, w1, half = (_maps(tmp_path / n) for n in ("zero", "w0", "w1", "half"))
    np.testing.assert_allclose(w0, zero, atol=1e-5)
    assert np.abs(w1 - zero).max() > 1e-3
    np.testing.assert_allclose(half, 0.5 * (zero + w1), atol=1e-4)  # resizing to native size is linear
    assert PredictionReader(tmp_path / "half" / "predictions").meta["references"]["weight"] == 0.5


def _defect_data(root: Path) -> tuple[Path, Path, Path]:
    """Normal images of one smooth texture; targets with a bright square defect and its mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:112, 0:112]
    base = (127 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0))[..., None].repeat(3, axis=2)

    def texture() -> np.ndarray:
        return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)

    normals, targets, masks = (root / n for n in ("normals", "targets", "masks"))
    for folder in (normals, targets, masks):
        folder.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(texture()).save(normals / f"n{k}.png")
    for k in range(4):
        image, mask = texture(), np.zeros((112, 112), np.uint8)
        y, x = rng.integers(10, 70, size=2)
        image[y : y + 32, x : x + 32] = [250, 30, 200]
        mask[y : y + 32, x : x + 32] = 255
        Image.fromarray(image).save(targets / f"t{k}.png")
        Image.fromarray(mask).save(masks / f"t{k}.png")
    return normals, targets, masks


def _pixel_auroc(out: Path, masks: Path) -> float:
    from sklearn.metrics import roc_auc_score

    manifest = pd.read_csv(out / "private" / "predictions.manifest.csv")
    scores, truth = [], []
    for index, pixel_map in PredictionReader(out / "predictions").iter_maps():
        name = Path(manifest.loc[index, "image_path"]).name
        scores.append(pixel_map.ravel())
        truth.append((np.asarray(Image.open(masks / name)) > 0).ravel())
    return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


def test_k_shot_beats_zero_shot_where_zero_shot_is_random(tmp_path):
    normals, targets, masks = _defect_data(tmp_path / "data")
    common = {"model_name": "ad_dinov3_tiny", "device": "cpu", "progress": False}
    score_files([targets], tmp_path / "zero", **common)
    score_files([targets], tmp_path / "few", references=[normals], shots=4, **common)
    zero, few = _pixel_auroc(tmp_path / "zero", masks), _pixel_auroc(tmp_path / "few", masks)
    assert few > 0.9
    assert few > zero + 0.1, (zero, few)


def test_a_resume_with_other_references_is_refused_naming_both(tmp_path, folders):
    normals, targets = folders
    common = {"model_name": "ad_dinov3_tiny", "device": "cpu", "progress": False}
    score_files([targets], tmp_path / "out", references=[normals], shots=2, **common)
    before = _maps(tmp_path / "out")
    score_files([targets], tmp_path / "out", references=[normals], shots=2, **common)  # the same: resumes
    with pytest.raises(DataError, match=r"with references 2-shot draw 0 .*, but this run uses 1-shot draw 3 "):
        score_files([targets], tmp_path / "out", references=[normals], shots=1, reference_draw=3, **common)
    with pytest.raises(DataError, match=r"but this run uses none \(zero-shot\)"):
        score_files([targets], tmp_path / "out", **common)
    np.testing.assert_array_equal(_maps(tmp_path / "out"), before)


def test_a_transductive_model_fuses_its_set_map(tmp_path, folders):
    normals, targets = folders
    common = {"model_name": "dinov3_mutual_tiny", "device": "cpu", "progress": False}
    score_files([targets], tmp_path / "zero", **common)
    score_files([targets], tmp_path / "w0", references=[normals], shots=2, fewshot_weight=0.0, **common)
    score_files([targets], tmp_path / "w1", references=[normals], shots=2, fewshot_weight=1.0, **common)
    zero, w0, w1 = (_maps(tmp_path / n) for n in ("zero", "w0", "w1"))
    np.testing.assert_allclose(w0, zero, atol=1e-5)
    assert np.abs(w1 - zero).max() > 1e-3


def test_reference_options_that_do_not_go_together_are_refused(tmp_path, folders):
    normals, targets = folders
    common = {"model_name": "ad_dinov3_tiny", "device": "cpu", "progress": False}
    with pytest.raises(ConfigError, match="--reference needs --shots K"):
        score_files([targets], tmp_path / "a", references=[normals], **common)
    with pytest.raises(ConfigError, match="--shots, --fewshot-weight only apply with --reference"):
        score_files([targets], tmp_path / "b", shots=2, fewshot_weight=0.3, **common)
    with pytest.raises(ConfigError, match="--tile with --reference is not supported"):
        score_files([targets], tmp_path / "c", references=[normals], shots=1, tile=True, **common)


# ---- medad score


def test_cli_scores_few_shot(tmp_path, folders, monkeypatch, capsys):
    normals, targets = folders
    out = tmp_path / "out"
    code, said = run_medad(
        monkeypatch, capsys, "score", str(targets), "--out", str(out), "--model", "winclip_tiny", "--device", "cpu",
        "--reference", str(normals), "--shots", "1", "--reference-seed", "3", "--fewshot-weight", "0.25",
    )  # fmt: skip
    assert code == 0, said
    record = json.loads((out / "predictions" / "meta.json").read_text())["references"]
    assert (record["shots"], record["seed"], record["draw"], record["weight"]) == (1, 3, 0, 0.25)


def _cli_error(monkeypatch, capsys, *args: str) -> str:
    code, said = run_medad(monkeypatch, capsys, "score", *args, "--model", "ad_dinov3_tiny", "--device", "cpu")
    lines = [line for line in said.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in said, said
    return lines[0]


def test_cli_refuses_bad_references_with_one_line(tmp_path, folders, monkeypatch, capsys):
    normals, targets = folders
    out = ["--out", str(tmp_path / "out")]
    said = _cli_error(monkeypatch, capsys, str(targets), *out, "--reference", str(normals), "--shots", "3")
    assert "fewer than --shots 3" in said and str(normals) in said
    said = _cli_error(monkeypatch, capsys, str(targets), *out, "--reference", str(targets), "--shots", "1")
    assert "is also among the targets" in said and "ref_" in said
    grey = write_pngs(tmp_path / "grey", 2, grey=True)
    said = _cli_error(monkeypatch, capsys, str(targets), *out, "--reference", str(grey), "--shots", "1")
    assert "image, greyscale" in said and "same channel count" in said
    root = tmp_path / "mvtec"
    write_pngs(root / "bottle" / "train" / "good", 2)
    write_pngs(root / "bottle" / "test" / "good", 1)
    write_pngs(root / "bottle" / "test" / "broken", 1, seed=9)
    (root / "bottle" / "ground_truth" / "broken").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "bottle" / "ground_truth" / "broken" / "ref_0_mask.png")
    said = _cli_error(monkeypatch, capsys, str(targets), *out, "--reference", str(root), "--shots", "1")
    assert "labelled abnormal" in said and "broken/ref_0.png" in said
    said = _cli_error(monkeypatch, capsys, str(targets), *out, "--shots", "1")
    assert "only apply with --reference" in said


def test_cli_refuses_a_model_that_needs_references_before_building_it(tmp_path, folders, monkeypatch, capsys):
    _, targets = folders
    assert model_class("anomalydino_tiny").needs_references

    def no_build(*_a, **_k):
        raise AssertionError("a model was built")

    monkeypatch.setattr("medad.models.create_model", no_build)
    code, said = run_medad(
        monkeypatch, capsys, "score", str(targets), "--out", str(tmp_path / "out"), "--model", "anomalydino_tiny"
    )
    assert code == 2 and said.count("error:") == 1 and "Traceback" not in said, said
    assert "'anomalydino_tiny' scores only against normal reference images; add --reference NORMALS --shots K" in said
    assert not (tmp_path / "out").exists()


def test_a_model_that_needs_references_refuses_another_weight(tmp_path, folders):
    normals, targets = folders
    with pytest.raises(ConfigError, match=r"has no zero-shot map .* drop --fewshot-weight"):
        score_files(
            [targets], tmp_path / "out", model_name="anomalydino_tiny", references=[normals], shots=1,
            fewshot_weight=0.5, device="cpu", progress=False,
        )  # fmt: skip
    score_files(
        [targets], tmp_path / "ok", model_name="anomalydino_tiny", references=[normals], shots=1, progress=False
    )
    record = PredictionReader(tmp_path / "ok" / "predictions").meta["references"]
    assert (record["weight"], record["radii"]) == (1.0, [1])  # the model's own form: few-shot only, raw patches


def test_reference_names_stay_in_private(tmp_path, folders, monkeypatch, capsys):
    from tests.privacy.test_canary_scan import CANARY, scan

    _, targets = folders
    normals = write_pngs(tmp_path / f"{CANARY}_normals", 2, seed=6)
    for png in normals.iterdir():
        png.rename(normals / f"{CANARY}_{png.name}")
    out = tmp_path / "out"
    code, said = run_medad(
        monkeypatch, capsys, "score", str(targets), "--out", str(out), "--model", "ad_dinov3_tiny", "--device", "cpu",
        "--reference", str(normals), "--shots", "2",
    )  # fmt: skip
    assert code == 0, said
    assert scan(out) == []
    assert CANARY in (out / "private" / "predictions.references.csv").read_text()
