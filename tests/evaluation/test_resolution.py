"""Release-style evaluation: maps and masks resized to the model input size (``resolution='model'``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medad.engine.predictions import PredictionWriter
from medad.errors import ConfigError
from medad.evaluation import evaluate
from medad.evaluation.resolution import resize_map, resize_mask

SIZE = 8


def _study(tmp_path, image_size: int | None = SIZE):
    rng = np.random.default_rng(4)
    rows, masks, maps = [], {}, {}
    for i in range(6):
        h, w = (24, 40) if i % 2 else (30, 18)
        mask = np.zeros((h, w), bool)
        mask[4:14, 5:15] = True
        masks[i] = mask
        maps[i] = (rng.random((h, w)) * 0.6 + 0.4 * mask).astype(np.float32)
        row = {"dataset": "synth", "class_name": "a", "split": "test", "image_path": f"/x/{i}.png", "mask_path": ""}
        rows.append({**row, "label": 1, "defect_type": "", "group_id": f"g{i}", "case_id": f"c{i}"})
    manifest = pd.DataFrame(rows)
    manifest["label"] = manifest["label"].astype("Int64")
    meta = {"model": {"image_size": image_size}} if image_size else {}
    with PredictionWriter(tmp_path / "m", chunk_size=4, meta=meta) as writer:
        for i in range(6):
            writer.add([i], [float(maps[i].max())], [maps[i]])
    return manifest, masks, maps


def _pixel_auroc(result) -> float:
    row = next(r for r in result["rows"] if r["metric"] == "pixel_auroc" and r["class_name"] == "a")
    return float(row["value"])


def test_model_resolution_resizes_maps_and_masks_as_the_release(tmp_path) -> None:
    manifest, masks, maps = _study(tmp_path)

    def reader(row):
        return masks[int(row["image_path"].split("/")[-1][:-4])]

    kwargs = {"ci": {"n_resamples": 0}, "comparisons": None, "mask_reader": reader, "metrics": ["pixel_auroc"]}
    native = evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "native", **kwargs)
    model = evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "model", resolution="model", **kwargs)
    assert native["settings"]["resolution"]["mode"] == "native"
    assert model["settings"]["resolution"] == {
        "mode": "model",
        "size": SIZE,
        "description": f"maps and masks resized to {SIZE}x{SIZE} (bilinear; masks then > 0.5), as the released code",
    }
    y_native = np.concatenate([masks[i].ravel() for i in range(6)])
    s_native = np.concatenate([maps[i].ravel() for i in range(6)])
    assert _pixel_auroc(native) == pytest.approx(roc_auc_score(y_native, s_native), abs=1e-9)
    y_model = np.concatenate([resize_mask(masks[i], SIZE).ravel() for i in range(6)])
    s_model = np.concatenate([resize_map(maps[i], SIZE).ravel() for i in range(6)])
    assert y_model.size == 6 * SIZE * SIZE
    assert _pixel_auroc(model) == pytest.approx(roc_auc_score(y_model, s_model), abs=1e-9)
    assert _pixel_auroc(model) != pytest.approx(_pixel_auroc(native), abs=1e-6)


def test_model_resolution_needs_a_recorded_input_size(tmp_path) -> None:
    manifest, masks, _ = _study(tmp_path, image_size=None)
    with pytest.raises(ConfigError, match=r"record no model input size.*resolution 'native'"):
        evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "e", resolution="model", mask_reader=lambda r: masks[0])
    with pytest.raises(ConfigError, match=r"one of native, model"):
        evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "e", resolution="512")


def test_protocol_key_evaluation_resolution() -> None:
    from pathlib import Path

    from medad.protocols.loading import load_protocol

    demo = Path(__file__).parents[2] / "protocols" / "demo.yaml"
    assert load_protocol(demo).protocol.evaluation_resolution == "native"
    assert load_protocol(demo, ["evaluation_resolution=model"]).protocol.evaluation_resolution == "model"
    with pytest.raises(ConfigError, match=r"evaluation_resolution"):
        load_protocol(demo, ["evaluation_resolution=512"])


def test_cli_eval_resolution_model(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from medad.cli import app
    from medad.data import write_layout

    root = write_layout(tmp_path / "isic", "isic2016", n_abnormal=2, size=40, seed=0)
    scored = CliRunner().invoke(app, ["score", str(root), "--kind", "isic", "--model", "ad_dinov3_tiny",
                                      "--out", str(tmp_path / "s"), "--device", "cpu", "--no-heatmaps"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    args = ["eval", str(tmp_path / "s" / "predictions"), "--data", str(root), "--kind", "isic", "--ci-resamples", "0"]
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "e"), "--resolution", "model"])
    assert done.exit_code == 0, done.output
    settings = json.loads((tmp_path / "e" / "metrics.json").read_text())["settings"]
    assert settings["resolution"]["mode"] == "model" and settings["resolution"]["size"] == 112
