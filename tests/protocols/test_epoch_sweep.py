"""The released code's epoch selection, opt-in and labelled: every epoch scored on the targets, best by pixel AUROC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medad.evaluation.paper_view import SELECTION_LABEL
from medad.protocols.epoch_sweep import SWEEP_NOTE, criterion, select_epoch
from tests.protocols.test_run import PROTOCOL


def test_selection_rule() -> None:
    rows = [
        {"metric": "pixel_auroc", "class_name": "__mean__", "value": 0.6},
        {"metric": "pixel_auroc", "class_name": "__mean__", "value": 0.8},
        {"metric": "pixel_auroc", "class_name": "a", "value": 0.0},
        {"metric": "aupro", "class_name": "__mean__", "value": 0.1},
    ]
    assert criterion(rows) == 0.7
    epochs = [{"epoch": 1, "criterion": 0.5}, {"epoch": 2, "criterion": 0.9}, {"epoch": 3, "criterion": 0.9}]
    assert select_epoch(epochs)["epoch"] == 2  # the earliest of equals
    assert select_epoch([{"epoch": 1, "criterion": None}]) is None


def test_protocol_epoch_sweep_is_labelled_and_never_the_headline(tmp_path: Path) -> None:
    from medad.protocols import run_protocol

    protocol = tmp_path / "sweep.yaml"
    protocol.write_text(PROTOCOL.replace("  batch_size: 6\n", "  batch_size: 6\n  epoch_sweep: true\n"))
    run_dir = run_protocol(protocol, out=tmp_path / "runs", progress=False)
    sweep = json.loads((run_dir / "evaluation" / "epoch_sweep.json").read_text())
    assert sweep["label"] == SELECTION_LABEL
    entry = sweep["models"]["clean"]
    assert [e["epoch"] for e in entry["per_epoch"]] == [1, 2] and entry["fixed_epoch"] == 2
    assert entry["best_epoch"] in (1, 2)
    assert entry["best_criterion"] == max(e["criterion"] for e in entry["per_epoch"])
    headline = json.loads((run_dir / "metrics.json").read_text())["rows"]
    fixed = criterion([r for r in headline if r["model"] == "clean"])  # the headline's epoch, re-scored alike
    assert entry["fixed_criterion"] == pytest.approx(fixed, abs=1e-9)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert SWEEP_NOTE in provenance["leakage"]["notes"]
    html = (run_dir / "report" / "report.html").read_text()
    assert f"Epoch {SELECTION_LABEL}" in html and "Epoch selected on the test data" in html


def test_the_fixed_epoch_of_a_pinned_model_is_its_score_epoch(tmp_path: Path) -> None:
    """With ``score_epoch`` the headline scores that epoch, so the sweep's "fixed epoch" is it, not the last."""
    from types import SimpleNamespace

    from medad.protocols.epoch_sweep import run_epoch_sweep

    for epoch in (1, 2, 3):
        (tmp_path / "train" / "k" / "checkpoints" / f"epoch_{epoch:03d}").mkdir(parents=True)

    def evaluate_epoch(label: str, predictions: Path, folder: Path) -> list[dict[str, object]]:
        epoch = int(folder.parent.name[6:])
        value = epoch / 10
        return [{"metric": "pixel_auroc", "class_name": "__mean__", "value": value, "model": label, "dataset": "d"}]

    runs = [SimpleNamespace(label="pinned", train_key="k", score_epoch=1),
            SimpleNamespace(label="last", train_key="k", score_epoch=None)]  # fmt: skip
    result = run_epoch_sweep(runs, tmp_path / "train", tmp_path / "out", lambda *a: None, evaluate_epoch)
    assert (result["models"]["pinned"]["fixed_epoch"], result["models"]["pinned"]["fixed_criterion"]) == (1, 0.1)
    assert (result["models"]["last"]["fixed_epoch"], result["models"]["last"]["best_epoch"]) == (3, 3)
