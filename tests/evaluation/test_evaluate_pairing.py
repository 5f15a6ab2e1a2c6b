"""evaluate() refuses predictions scored from another manifest: indices would pair maps with the wrong masks."""

from __future__ import annotations

import pytest
import torch

from medad.data import load_manifest, manifest_from_paths, write_layout
from medad.engine.scorer import score
from medad.errors import DataError
from medad.evaluation import evaluate


def test_predictions_of_other_images_are_refused(tmp_path):
    from medad.models import create_model

    root = write_layout(tmp_path / "isic", "isic2016", n_abnormal=3, size=48, seed=0)
    dataset = load_manifest(root, "isic")
    as_folder = manifest_from_paths([str(root)]).reset_index(drop=True)
    torch.manual_seed(0)
    model = create_model("ad_dinov3_tiny")
    score(model, as_folder, tmp_path / "wrong", batch_size=4, progress=False)
    with pytest.raises(DataError, match="scored from other images"):
        evaluate({"m": tmp_path / "wrong"}, dataset, tmp_path / "eval")
    score(model, dataset, tmp_path / "right", batch_size=4, progress=False)
    result = evaluate({"m": tmp_path / "right"}, dataset, tmp_path / "eval", ci={"n_resamples": 50})
    assert any(row["metric"] == "pixel_auroc" and row["status"] == "ok" for row in result["rows"])
