"""Random frozen weights are named in every output of score -> eval -> report; real frozen weights are not.

The flag concerns the frozen backbone / text weights: a checkpoint whose card names real weights files is not
random (and must not warn), a checkpoint trained on a random backbone is.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from safetensors.torch import save_file

from medad.data import load_manifest, write_layout
from medad.engine.predictions import predictions_random_weights
from medad.engine.scorer import score_files
from medad.evaluation import evaluate
from medad.models import create_model, save_checkpoint


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("rw")
    root = write_layout(base / "data", "mvtec", n_normal=1, n_abnormal=2, size=32, seed=0, classes=["bottle"])
    random_model = create_model("ad_dinov3_tiny", text_disk_cache=False)
    files = {"backbone": base / "backbone.safetensors", "text": base / "text.safetensors"}
    save_file({k: v.contiguous() for k, v in random_model.backbone.model.state_dict().items()}, files["backbone"])
    save_file({k: v.contiguous() for k, v in random_model.text_encoder.tower.state_dict().items()}, files["text"])
    real_model = create_model(
        "ad_dinov3_tiny",
        random_init=False,
        backbone_weights=str(files["backbone"]),
        text_weights=str(files["text"]),
        text_disk_cache=False,
    )
    real_model.mark_adapters_trained()  # stands in for a trained checkpoint: only the frozen weights differ
    checkpoints = {
        "real": save_checkpoint(real_model, base / "ck_real"),
        "random": save_checkpoint(random_model, base / "ck_random"),
    }
    return base, root, checkpoints


def test_card_flag_follows_the_frozen_weights(scored) -> None:
    _, _, checkpoints = scored
    cards = {name: json.loads((folder / "card.json").read_text()) for name, folder in checkpoints.items()}
    assert cards["real"]["random_weights"] is False
    assert cards["real"]["backbone"]["source"] == cards["real"]["text"]["source"] == "file"
    assert cards["random"]["random_weights"] is True
    assert predictions_random_weights({"model": {"random_weights": True}}) is True  # older meta: card's flag
    assert predictions_random_weights({"random_weights": False, "model": {"random_weights": True}}) is False


def test_score_eval_report_name_random_weights(scored, capsys, monkeypatch) -> None:
    from medad.cli import main

    base, root, checkpoints = scored
    outs = {}
    for name, checkpoint in checkpoints.items():
        outs[name] = base / f"score_{name}"
        score_files([root], outs[name], checkpoint=checkpoint, kind="mvtec", heatmaps=False, progress=False)
        err = capsys.readouterr().err
        assert ("RANDOM" in err) is (name == "random"), err
        table = pd.read_csv(outs[name] / "scores.csv")
        assert table["random_weights"].tolist() == [name == "random"] * len(table)
        meta = json.loads((outs[name] / "predictions" / "meta.json").read_text())
        assert meta["random_weights"] is (name == "random")

    ev = base / "evaluation"
    manifest = load_manifest(root, "mvtec")
    evaluate({n: o / "predictions" for n, o in outs.items()}, manifest, ev, ci={"n_resamples": 20})
    doc = json.loads((ev / "metrics.json").read_text())
    assert doc["settings"]["random_weights"] == {"real": False, "random": True}
    expected = "RANDOM WEIGHTS: random ran with random weights (random frozen weights or untrained adapters)"
    assert doc["settings"]["warning"].startswith(expected)
    assert {(r["model"], r["random_weights"]) for r in doc["rows"]} == {("real", False), ("random", True)}
    per_image = pd.read_csv(ev / "per_image.csv")
    assert per_image.groupby("model")["random_weights"].unique().to_dict() == {"real": [False], "random": [True]}

    monkeypatch.setattr(sys, "argv", ["medad", "report", str(ev), "--out", str(base / "report")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0, capsys.readouterr().err
    html = (base / "report" / "report.html").read_text()
    md = (base / "report" / "report.md").read_text()
    banner = html.split('<div class="banner" role="alert">', 1)[1].split("</div>", 1)[0]
    assert banner.startswith("WARNING - RANDOM WEIGHTS: random ran") and "real" not in banner.split(" ran ")[0]
    assert "**WARNING - RANDOM WEIGHTS: random ran" in md


def test_real_weights_alone_show_no_banner(scored, capsys) -> None:
    from medad.reports import build_report

    base, root, checkpoints = scored
    out = base / "score_only_real"
    score_files([root], out, checkpoint=checkpoints["real"], kind="mvtec", heatmaps=False, progress=False)
    evaluate({"real": out / "predictions"}, load_manifest(root, "mvtec"), out / "evaluation", ci={"n_resamples": 0})
    doc = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert doc["settings"]["random_weights"] == {"real": False} and "warning" not in doc["settings"]
    html = build_report(out / "evaluation", predictions=[out / "predictions"]).read_text()
    assert "RANDOM WEIGHTS" not in html and "RANDOM" not in capsys.readouterr().err
