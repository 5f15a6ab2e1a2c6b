"""Dice and IoU are means over abnormal images only: a normal image's false alarm is not a zero Dice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medad.engine.predictions import PredictionWriter
from medad.evaluation import evaluate


def test_dice_and_iou_average_the_abnormal_images_only(tmp_path) -> None:
    masks, maps = {}, {}
    # image 0: abnormal, prediction equals the mask (Dice 1, IoU 1)
    masks[0] = np.zeros((8, 8), bool)
    masks[0][2:4, 2:6] = True
    maps[0] = masks[0].astype(np.float32)
    # image 1: abnormal, prediction covers the 8 mask pixels and 8 more (Dice 2*8/(8+16) = 2/3, IoU 8/16 = 1/2)
    masks[1] = np.zeros((8, 8), bool)
    masks[1][0:2, 0:4] = True
    maps[1] = np.zeros((8, 8), np.float32)
    maps[1][0:4, 0:4] = 1.0
    # image 2: normal with a false alarm (Dice 0 if it were counted); image 3: normal and clean (Dice undefined)
    masks[2], masks[3] = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    maps[2] = np.zeros((8, 8), np.float32)
    maps[2][5:8, 5:8] = 1.0
    maps[3] = np.zeros((8, 8), np.float32)
    rows = [
        {"dataset": "s", "class_name": "c", "split": "test", "image_path": f"/x/{i}.png", "mask_path": "",
         "label": int(masks[i].any()), "defect_type": "", "group_id": f"g{i}", "case_id": f"c{i}"}
        for i in range(4)
    ]  # fmt: skip
    manifest = pd.DataFrame(rows)
    manifest["label"] = manifest["label"].astype("Int64")
    with PredictionWriter(tmp_path / "m", chunk_size=2) as writer:
        for i in range(4):
            writer.add([i], [float(maps[i].max())], [maps[i]])
    out = tmp_path / "eval"
    evaluate({"m": tmp_path / "m"}, manifest, out, ci={"n_resamples": 0}, threshold=0.5,
             mask_reader=lambda row: masks[int(row["image_path"][3:-4])])  # fmt: skip
    doc = json.loads((out / "metrics.json").read_text())
    value = {(r["class_name"], r["metric"]): r["value"] for r in doc["rows"]}
    assert value[("c", "dice")] == pytest.approx((1 + 2 / 3) / 2)
    assert value[("c", "iou")] == pytest.approx((1 + 1 / 2) / 2)
    per_image = pd.read_csv(out / "per_image.csv").set_index("index")
    assert per_image.loc[0, "dice"] == pytest.approx(1.0) and per_image.loc[1, "iou"] == pytest.approx(0.5)
