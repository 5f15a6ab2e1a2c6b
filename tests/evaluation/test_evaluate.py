"""End-to-end evaluation on a tiny synthetic manifest with two models: contract files, exactness, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medad.engine.predictions import PredictionWriter
from medad.errors import ConfigError, DataError
from medad.evaluation import evaluate
from medad.metrics import image_auroc, pixel_auroc


def _setup(tmp_path, n=12):
    rng = np.random.default_rng(0)
    rows, masks = [], {}
    for i in range(n):
        cls = "a" if i < n // 2 else "b"
        label = [0, 1][i % 2] if i != n - 1 else None
        h, w = (16, 20) if i % 3 else (12, 12)
        mask = np.zeros((h, w), bool)
        if label == 1:
            mask[2 : 2 + rng.integers(2, 6), 3 : 3 + rng.integers(2, 6)] = True
        masks[i] = mask
        rows.append(
            {
                "dataset": "synth",
                "class_name": cls,
                "split": "test",
                "image_path": f"/x/{i}.png",
                "mask_path": "",
                "label": label,
                "defect_type": "",
                "group_id": f"g{i}",
                "case_id": f"c{i}",
            }
        )
    manifest = pd.DataFrame(rows)
    manifest["label"] = manifest["label"].astype("Int64")
    maps = {}
    for name, strength in (("good", 0.6), ("weak", 0.15)):
        folder = tmp_path / name
        with PredictionWriter(folder, chunk_size=5) as writer:
            for i in range(n):
                m = rng.random(masks[i].shape).astype(np.float32) * 0.5 + strength * masks[i]
                maps[(name, i)] = m
                writer.add([i], [float(m.max())], [m])
    return manifest, masks, maps


def test_evaluate_writes_contract(tmp_path) -> None:
    manifest, masks, maps = _setup(tmp_path)
    preds = {"good": tmp_path / "good", "weak": tmp_path / "weak"}

    def reader(row):
        return masks[int(row["image_path"].split("/")[-1][:-4])]

    out = tmp_path / "eval"
    res = evaluate(preds, manifest, out, ci={"n_resamples": 200, "seed": 1}, mask_reader=reader, chunk_size=4)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["settings"]["ci"]["n_resamples"] == 200 and doc["settings"]["fpr_limit"] == 0.3
    rows = {(r["model"], r["class_name"], r["metric"]): r for r in doc["rows"]}
    assert set(rows[("good", "a", "aupro")]) == {
        "model",
        "dataset",
        "class_name",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n_images",
        "status",
        "reason",
        "aggregate",
        "random_weights",
        "not_zero_shot",
    }
    assert rows[("good", "a", "aupro")]["not_zero_shot"] is None  # no protocol marked these predictions
    a_idx = list(range(6))
    pooled_idx = list(range(11))
    r = rows[("good", "a", "pixel_auroc")]
    flat_maps = np.concatenate([maps[("good", i)].ravel() for i in a_idx])
    flat_masks = np.concatenate([masks[i].ravel() for i in a_idx])
    assert r["value"] == pytest.approx(pixel_auroc(flat_maps[None], flat_masks[None]), abs=1e-9)
    assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["n_images"] == 6
    ref = ref_aupro_multi([maps[("good", i)] for i in pooled_idx], [masks[i] for i in pooled_idx])
    assert rows[("good", "__pooled__", "aupro")]["value"] == pytest.approx(ref, abs=1e-9)
    scores = np.array([maps[("good", i)].max() for i in pooled_idx])
    labels = np.array([i % 2 for i in pooled_idx])
    assert rows[("good", "__pooled__", "image_auroc")]["value"] == pytest.approx(image_auroc(scores, labels))
    mean = rows[("good", "__mean__", "image_auroc")]
    assert mean["value"] == pytest.approx(
        (rows[("good", "a", "image_auroc")]["value"] + rows[("good", "b", "image_auroc")]["value"]) / 2
    )
    table = pd.read_csv(out / "per_image.csv")
    assert list(table.columns) == [
        "model",
        "dataset",
        "index",
        "case_id",
        "class_name",
        "label",
        "image_score",
        "max_pixel_score",
        "dice",
        "iou",
        "random_weights",
        "volume_id",
        "slice_order",
    ]
    assert len(table) == 24 and table["label"].isna().sum() == 2
    comps = json.loads((out / "comparisons.json").read_text())
    assert {c["test"] for c in comps} == {"delong", "paired_bootstrap", "wilcoxon"}
    assert all(c["p_adjusted"] is None or c["p_adjusted"] >= c["p_value"] for c in comps)
    curves = json.loads((out / "curves.json").read_text())
    assert all(len(c["pixel"]["roc"]["fpr"]) <= 512 for c in curves)
    first = (out / "metrics.json").read_bytes()
    evaluate(preds, manifest, out, ci={"n_resamples": 200, "seed": 1}, mask_reader=reader, chunk_size=5)
    assert (out / "metrics.json").read_bytes() == first
    assert res["rows"]


def ref_aupro_multi(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Brute-force AUPRO over maps of different sizes (same algorithm as tests/metrics/reference.py)."""
    from scipy import ndimage

    comps, normal = [], []
    for m, k in zip(maps, masks, strict=True):
        lab, n = ndimage.label(k, structure=np.ones((3, 3)))
        comps.extend(m[lab == j] for j in range(1, n + 1))
        normal.append(m[~k])
    normal = np.concatenate(normal)
    xs, ys = [0.0], [0.0]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        xs.append(float(np.mean(normal >= t)))
        ys.append(float(np.mean([np.mean(c >= t) for c in comps])))
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if x0 >= 0.3:
            break
        if x1 > 0.3:
            y1, x1 = y0 + (y1 - y0) * (0.3 - x0) / (x1 - x0), 0.3
        area += (x1 - x0) * (y0 + y1) / 2
    return area / 0.3


def test_evaluate_errors(tmp_path) -> None:
    manifest, _, _ = _setup(tmp_path, n=4)
    with pytest.raises(ConfigError):
        evaluate({"good": tmp_path / "good"}, manifest, tmp_path / "e", metrics=["bogus"])
    bigger = pd.concat([manifest, manifest], ignore_index=True)
    with pytest.raises(DataError):
        evaluate({"good": tmp_path / "good"}, bigger, tmp_path / "e", mask_reader=lambda r: np.zeros((2, 2), bool))
