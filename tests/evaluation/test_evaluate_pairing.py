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


def test_masks_and_labels_given_after_scoring_pair_but_other_class_words_do_not(tmp_path):
    """Predictions depend on the images and class words, not on the truth: a manifest that only gains masks and
    labels is evaluated with them; one whose class word changed (what a CLIP model was prompted with) is refused,
    and so are older predictions that record only the whole manifest's hash."""
    import json

    from medad.models import create_model

    root = write_layout(tmp_path / "isic", "isic2016", n_abnormal=3, size=48, seed=0)
    dataset = load_manifest(root, "isic")
    unlabelled = dataset.assign(mask_path="", label=None)  # what was known at scoring time
    torch.manual_seed(0)
    score(create_model("ad_dinov3_tiny"), unlabelled, tmp_path / "p", batch_size=4, progress=False)
    result = evaluate({"m": tmp_path / "p"}, dataset, tmp_path / "eval", ci={"n_resamples": 0})
    assert any(row["metric"] == "pixel_auroc" and row["status"] == "ok" for row in result["rows"])
    with pytest.raises(DataError, match="scored from other images"):
        evaluate({"m": tmp_path / "p"}, dataset.assign(class_name="lesion"), tmp_path / "e2")
    meta_path = tmp_path / "p" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["inputs_hash"]  # predictions written before the inputs hash existed
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="scored from other images"):
        evaluate({"m": tmp_path / "p"}, dataset, tmp_path / "e3")
