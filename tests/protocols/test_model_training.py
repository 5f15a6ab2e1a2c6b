"""Per-model training recipes (``models[i].training``), the pinned score epoch (``score_epoch``) and the
leakage guard on a model's own (or a release's) training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medad.errors import ConfigError
from medad.protocols.loading import load_protocol
from medad.protocols.resolve import config_hash

BASE = """\
name: recipes
models:
  - name: a
    model: anomalyclip_tiny
  - name: b
    model: crane_tiny
training:
  datasets:
    - {name: industrial, kind: mvtec, root: data/industrial}
  epochs: 3
  lr: 1.0e-3
  batch_size: 4
targets:
  - {name: lesions, kind: isic, root: data/lesions}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def with_model_training(text: str, model: int, training: dict[str, object], **keys: object) -> str:
    data = yaml.safe_load(text)
    data["models"][model]["training"] = training
    data["models"][model].update(keys)
    return yaml.safe_dump(data, sort_keys=False)


def test_a_model_training_replaces_the_protocol_keys_for_that_model_only(tmp_path: Path) -> None:
    lp = load_protocol(write(tmp_path, with_model_training(BASE, 1, {"epochs": 5, "lr": 2.0e-3})))
    resolved = lp.resolved
    a, b = (resolved.training_for(m) for m in resolved.models)
    assert a is not None and b is not None
    assert (a.epochs, a.lr, a.batch_size) == (3, 1.0e-3, 4)
    assert (b.epochs, b.lr, b.batch_size) == (5, 2.0e-3, 4)
    assert b.datasets == a.datasets  # not given: the protocol's
    dumped = resolved.dump()["models"][1]["training"]
    assert dumped["epochs"] == 5 and dumped["batch_size"] == 4 and dumped["datasets"] is None
    assert "training" not in resolved.dump()["models"][0]  # a model without one keeps its resolved form
    assert config_hash(resolved) != config_hash(load_protocol(write(tmp_path, BASE, "plain.yaml")).resolved)


def test_an_unknown_key_in_a_model_training_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' in models\[1\]\.training; did you mean 'epochs'"):
        load_protocol(write(tmp_path, with_model_training(BASE, 1, {"epoch": 5})))


def test_a_model_training_without_a_protocol_training_must_be_complete(tmp_path: Path) -> None:
    data = yaml.safe_load(BASE)
    own = data.pop("training")
    data["models"][0]["training"] = own
    data["models"][1]["training"] = {"epochs": 2}
    with pytest.raises(ConfigError, match=r"models\[1\]\.training: model 'b': `training:` lacks datasets, lr"):
        load_protocol(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    data["models"][1]["training"] = dict(own, epochs=2)
    resolved = load_protocol(write(tmp_path, yaml.safe_dump(data, sort_keys=False))).resolved
    b = resolved.training_for(resolved.models[1])
    assert b is not None and b.epochs == 2 and b.weight_decay == 0.01  # the schema's defaults fill the rest


@pytest.mark.parametrize("where", ["model", "protocol"])
def test_a_score_epoch_beyond_the_epochs_is_refused(tmp_path: Path, where: str) -> None:
    if where == "model":
        text, key = with_model_training(BASE, 1, {"epochs": 2, "score_epoch": 3}), r"models\[1\]\.training\.score_epoch"
    else:
        text, key = BASE.replace("  epochs: 3\n", "  epochs: 3\n  score_epoch: 4\n"), r"training\.score_epoch"
    with pytest.raises(ConfigError, match=key + r": model '.' would score with epoch \d but trains \d epoch"):
        load_protocol(write(tmp_path, text))


def test_a_score_epoch_is_resolved_per_model_and_hashed(tmp_path: Path) -> None:
    lp = load_protocol(write(tmp_path, with_model_training(BASE, 1, {"score_epoch": 1})))
    plain = load_protocol(write(tmp_path, BASE, "plain.yaml"))
    assert config_hash(lp.resolved) != config_hash(plain.resolved)
    training = lp.resolved.training_for(lp.resolved.models[1])
    assert training is not None and training.score_epoch == 1
    assert "score_epoch" not in plain.resolved.dump()["training"]


TWIN = """\
name: pinned
output: runs
synthetic:
  industrial: {layout: mvtec, classes: [bottle], n_normal: 1, n_abnormal: 2, size: 32, seed: 0}
  medical: {layout: mvtec_style, classes: [skin], n_normal: 1, n_abnormal: 2, size: 32, seed: 1}
models:
  - name: crane_plus
    model: crane_plus_tiny
    image_score: global
    training: {score_epoch: 1}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 2
  lr: 1.0e-3
  batch_size: 3
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
metrics: [pixel_auroc]
statistics: {resamples: 0}
"""


def test_one_run_trains_then_scores_with_the_pinned_epoch(tmp_path: Path) -> None:
    from medad.engine.scorer import weights_fingerprint
    from medad.models import load_checkpoint
    from medad.protocols.runner import run_protocol

    run_dir = run_protocol(write(tmp_path, TWIN, "pinned.yaml"), progress=False)
    checkpoints = (run_dir / "checkpoints" / "crane_plus" / "checkpoints").resolve()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_001", "epoch_002"]  # trained 2, kept both
    meta = json.loads((run_dir / "predictions" / "crane_plus" / "meta.json").read_text())
    first = weights_fingerprint(load_checkpoint(checkpoints / "epoch_001"))
    assert meta["weights_sha256"] == first != weights_fingerprint(load_checkpoint(checkpoints / "epoch_002"))
    assert meta["model"]["study"] == {"score_epoch": 1, "epochs": 2}
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["weights"]["crane_plus"]["study"] == {"score_epoch": 1, "epochs": 2}
    report = (run_dir / "report" / "report.md").read_text()
    assert "crane_plus: scored with the checkpoint of epoch 1 of 2 (pinned in the protocol" in report
    stages = json.loads((run_dir / "stages.json").read_text())
    # the same training stage as the unpinned run, another score stage
    unpinned = run_protocol(write(tmp_path, TWIN.replace("    training: {score_epoch: 1}\n", ""), "last.yaml"),
                            progress=False)  # fmt: skip
    other = json.loads((unpinned / "stages.json").read_text())
    assert other["train/crane_plus"] == stages["train/crane_plus"]
    assert other["score/crane_plus"] != stages["score/crane_plus"]
