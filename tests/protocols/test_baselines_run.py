"""AD-DINOv3 and both training-free baselines as models of one study: train only what has adapters, score
everything through the same scorer, paired tests with Holm correction, provenance and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medad.errors import ConfigError

PROTOCOL = """\
name: baselines-test
output: runs
synthetic:
  industrial: {layout: mvtec, classes: [bottle], n_normal: 2, n_abnormal: 4, size: 64, seed: 0}
  medical: {layout: mvtec_style, classes: [skin], n_normal: 4, n_abnormal: 6, size: 64, seed: 1}
models:
  - {name: ad, model: ad_dinov3_tiny, options: {image_size: 64}}
  - {name: winclip, model: winclip_tiny, image_score: global, class_words: {medical: {skin: skin lesion}}}
  - {name: mutual, model: dinov3_mutual_tiny, image_score: max}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 1
  lr: 1.0e-3
  batch_size: 6
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
scoring: {batch_size: 4, chunk_size: 4}
metrics: [pixel_auroc, image_auroc]
statistics:
  resamples: 20
  seed: 0
  comparisons: [[ad, winclip], [ad, mutual]]
  correction: holm
exports:
  - {formats: [png], models: [mutual]}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medad.protocols.runner import run_protocol

    path = tmp_path_factory.mktemp("study") / "baselines-test.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return run_protocol(path, progress=False)


def test_baselines_are_scored_evaluated_and_compared(run_dir: Path) -> None:
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ad"]  # nothing trained for baselines
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    for model in ("ad", "winclip", "mutual"):
        for metric in ("pixel_auroc", "image_auroc"):
            row = next(r for r in rows if (r["model"], r["class_name"], r["metric"]) == (model, "skin", metric))
            assert row["status"] == "ok" and 0.0 <= row["value"] <= 1.0 and row["n_images"] == 10
    comps = json.loads((run_dir / "evaluation" / "comparisons.json").read_text())
    pairs = {(c["model_a"], c["model_b"]) for c in comps}
    assert pairs == {("ad", "winclip"), ("ad", "mutual")}
    assert all(c["correction"] == "holm" and c["p_adjusted"] is not None for c in comps if c["p_value"] is not None)
    raw = sorted(c["p_value"] for c in comps if c["p_value"] is not None)
    assert raw and all(c["p_adjusted"] >= c["p_value"] - 1e-12 for c in comps if c["p_value"] is not None)
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["weights"]["winclip"]["card"]["name"] == "winclip_tiny"
    assert prov["weights"]["winclip"]["card"]["random_weights"] is True
    assert prov["weights"]["mutual"]["card"]["transductive"] is True
    assert list((run_dir / "exports").glob("*mutual/*_overlay.png"))


def test_mutual_predictions_equal_the_set_scored_directly(run_dir: Path) -> None:
    from medad.data import make_dataset, normalize_images
    from medad.engine.predictions import PredictionReader
    from medad.models import create_model

    reader = PredictionReader(run_dir / "predictions" / "mutual")
    from medad.export.manifest import load_manifest_file

    frame = load_manifest_file(run_dir / "private" / "manifest.csv")  # the one with source paths
    model = create_model("dinov3_mutual_tiny", image_score="max")
    dataset = make_dataset(frame, model.image_size, model.mean, model.std, masks=False, uint8=True)
    images = normalize_images(torch.stack([dataset[i]["image"] for i in range(len(frame))]), model.mean, model.std)
    direct = model(images)
    assert np.allclose(reader.image_scores, direct.image_scores.numpy(), atol=1e-5)


def test_training_free_models_need_no_training_and_refuse_a_checkpoint(tmp_path: Path) -> None:
    from medad.protocols.validate import validate_protocol

    ad_line = "  - {name: ad, model: ad_dinov3_tiny, options: {image_size: 64}}\n"
    text = PROTOCOL.split("training:")[0].replace(ad_line, "")
    text += "targets:\n  - {name: medical, kind: mvtec_style, synthetic: medical}\n"
    path = tmp_path / "free.yaml"
    path.write_text(text, encoding="utf-8")
    validate_protocol(path, structure_only=True)
    path.write_text(text.replace("image_score: max}", "image_score: max, checkpoint: ckpt}"), encoding="utf-8")
    with pytest.raises(ConfigError, match="training-free"):
        validate_protocol(path, structure_only=True)


def test_shipped_comparison_protocol_passes_structure_validation() -> None:
    from medad.protocols.validate import validate_protocol

    root = Path(__file__).resolve().parents[2]
    lp = validate_protocol(root / "protocols" / "compare-baselines.yaml", structure_only=True)
    p = lp.protocol
    assert {m.model for m in p.models} == {"ad_dinov3", "winclip", "dinov3_mutual"}
    assert p.statistics.correction == "holm" and ["ad_dinov3", "winclip"] in p.statistics.comparisons
    assert {t.name for t in p.targets} == {"visa", "btad", "mpdd", "isic", "colondb", "clinicdb", "tn3k"}
