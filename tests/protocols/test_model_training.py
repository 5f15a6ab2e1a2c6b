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


LEAK = """\
name: leak
output: runs
synthetic:
  industrial: {layout: mvtec, classes: [bottle], n_normal: 1, n_abnormal: 2, size: 32, seed: 0}
  polyps: {layout: colondb-pranet, n_abnormal: 3, size: 32, seed: 2}
models:
  - name: adaclip
    model: adaclip_tiny
    image_score: global
    training:
      datasets:
        - {name: industrial, kind: mvtec, synthetic: industrial}
        - {name: colondb_aux, kind: colondb, synthetic: polyps}
  - {name: crane, model: crane_tiny, image_score: global}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 1
  lr: 1.0e-3
  batch_size: 5
targets:
  - {name: colondb, kind: colondb, synthetic: polyps}
metrics: [pixel_auroc]
statistics: {resamples: 0}
"""


def test_a_model_trained_on_a_target_is_refused_naming_model_dataset_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_protocol(write(tmp_path, LEAK))
    said = str(refused.value)
    assert "models[0].training.datasets[1]: model 'adaclip' is trained on training dataset 'colondb_aux'" in said
    assert "target 'colondb' (CVC-ColonDB)" in said and "not be zero-shot" in said
    assert "`models[0].allow_not_zero_shot: true`" in said and "'not zero-shot (trained on CVC-ColonDB)'" in said


def test_a_public_dataset_in_two_folders_is_the_same_data(tmp_path: Path) -> None:
    text = with_model_training(BASE, 0, {"datasets": [{"name": "isic_train", "kind": "isic", "root": "other"}]})
    said = r"model 'a' is trained on training dataset 'isic_train', .*'lesions' \(ISIC\)"
    with pytest.raises(ConfigError, match=said):
        load_protocol(write(tmp_path, text))


def test_an_allowed_model_is_marked_not_zero_shot_in_the_paper_view_and_report(tmp_path: Path) -> None:
    from medad.protocols.runner import run_protocol

    allowed = "    image_score: global\n    allow_not_zero_shot: true\n    training:"
    text = LEAK.replace("    image_score: global\n    training:", allowed, 1)
    run_dir = run_protocol(write(tmp_path, text, "leak.yaml"), progress=False)
    view = json.loads((run_dir / "metrics.json").read_text())["paper_view"]["measured"]
    adaclip = next(r for r in view if r["model"] == "adaclip")
    assert adaclip["zero_shot"] == "not zero-shot (trained on CVC-ColonDB)" and adaclip["method"] == "adaclip"
    crane = next(r for r in view if r["model"] == "crane")
    assert "zero_shot" not in crane and crane["method"] == "crane"
    averages = {r["model"]: r for r in json.loads((run_dir / "metrics.json").read_text())["paper_view"]["averages"]}
    assert averages["adaclip"]["zero_shot"] == "not zero-shot (includes CVC-ColonDB, which it was trained on)"
    assert "zero_shot" not in averages["crane"]  # the medical average over a zero-shot row stays unmarked
    figures = {p["figures"]: p for p in adaclip["published"]}  # the publication's own figures, beside medad's
    assert figures["90.4 / 58.2"]["label"] == "published, not re-measured"
    assert "MVTec AD + ColonDB" in figures["90.4 / 58.2"]["training_data"]
    assert figures["79.1"]["zero_shot"] == "zero-shot"  # the appendix re-run on MVTec AD only
    assert [p["figures"] for p in crane["published"]] == ["82.5 / 73.0 / 36.0"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    marked = {(r["model"], r["dataset"], r["not_zero_shot"]) for r in metrics["rows"]}
    assert ("adaclip", "colondb", "not zero-shot (trained on CVC-ColonDB)") in marked
    assert all(mark is None for model, _, mark in marked if model != "adaclip")
    report = (run_dir / "report" / "report.md").read_text()
    assert "NOT ZERO-SHOT on colondb (trained on CVC-ColonDB" in report
    assert "adaclip on colondb — not zero-shot (trained on CVC-ColonDB)" in report  # its results table
    assert "adaclip (adaclip): its publication's figures, published, not re-measured" in report
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["weights"]["adaclip"]["study"] == {"not_zero_shot": {"colondb": "trained on CVC-ColonDB"}}
    notes = provenance["leakage"]["notes"]
    assert any("byte-identical to images of training dataset 'colondb_aux'" in n for n in notes)


def _release_prompts(path: Path) -> Path:
    """A Crane release prompt learner (``{"prompt_learner": ...}``) of the tiny twin's size, zero-filled."""
    import torch

    from medad.models.anomalyclip_config import TINY_DEFAULTS
    from medad.models.weights_files import prompt_learner_architecture

    tiny = {"text_cfg": TINY_DEFAULTS["clip_overrides"]["text_cfg"]}
    shapes = prompt_learner_architecture("crane", "ViT-B-16", tiny, sizes=(4, 2, 2)).expected()
    ints = {"tokenized_prompts_pos", "tokenized_prompts_neg"}
    state = {k: torch.zeros(v, dtype=torch.int32 if k in ints else torch.float32) for k, v in shapes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"prompt_learner": state}, path)
    return path


def test_a_converted_release_checkpoint_records_its_training_data(tmp_path: Path) -> None:
    from safetensors import safe_open

    from medad.models.anomalyclip_config import TINY_DEFAULTS
    from medad.models.release_data import release_training_data
    from medad.models.weights_files import convert_weights_file, prompt_learner_architecture

    arch = prompt_learner_architecture("crane", "ViT-B-16", {"text_cfg": TINY_DEFAULTS["clip_overrides"]["text_cfg"]},
                                       sizes=(4, 2, 2))  # fmt: skip
    released = _release_prompts(tmp_path / "trained_on_visa_cranep" / "epoch_1.pth")
    assert release_training_data(released, "clip-prompts") == ("visa",)  # what its folder says
    assert release_training_data(tmp_path / "pretrained_mvtec_colondb.pth", "adaclip") == ("mvtec", "colondb")
    assert release_training_data(tmp_path / "9_12_4_multiscale" / "epoch_15.pth", "clip-prompts") == ("mvtec",)
    out = convert_weights_file(released, tmp_path / "prompts.safetensors", [arch])
    assert out["training_data"] == ["visa"]
    renamed = convert_weights_file(released, tmp_path / "p2.safetensors", [arch], trained_on=["mvtec", "colondb"])
    assert renamed["training_data"] == ["mvtec", "colondb"]
    with safe_open(str(tmp_path / "p2.safetensors"), "pt") as handle:
        assert handle.metadata()["training_data"] == "mvtec,colondb"
    assert release_training_data(tmp_path / "p2.safetensors", "clip-prompts") == ("mvtec", "colondb")


def test_scoring_the_data_a_release_checkpoint_was_trained_on_is_refused_or_marked(tmp_path: Path) -> None:
    from medad.models.anomalyclip_config import TINY_DEFAULTS
    from medad.models.weights_files import convert_weights_file, prompt_learner_architecture

    arch = prompt_learner_architecture("crane", "ViT-B-16", {"text_cfg": TINY_DEFAULTS["clip_overrides"]["text_cfg"]},
                                       sizes=(4, 2, 2))  # fmt: skip
    released = _release_prompts(tmp_path / "release" / "epoch_1.pth")
    convert_weights_file(released, tmp_path / "prompts.safetensors", [arch], trained_on=["mvtec", "colondb"])
    data = yaml.safe_load(BASE)
    data["models"][1]["options"] = {"release_prompts": "prompts.safetensors"}
    data["targets"].append({"name": "polyps", "kind": "colondb", "root": "data/polyps"})
    with pytest.raises(ConfigError) as refused:
        load_protocol(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    assert (
        "models[1].options.release_prompts: model 'b' is trained on the release checkpoint of release_prompts "
        "(trained on MVTec AD + CVC-ColonDB), which is the data of target 'polyps' (CVC-ColonDB)"
    ) in str(refused.value)
    data["models"][1]["allow_not_zero_shot"] = True
    lp = load_protocol(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    from medad.protocols.structure import not_zero_shot_marks

    assert not_zero_shot_marks(lp, 1) == {"polyps": "trained on CVC-ColonDB"} and not_zero_shot_marks(lp, 0) == {}
    assert lp.resolved.models[1].options["release_prompts"] == str(tmp_path / "prompts.safetensors")


def test_a_training_free_model_takes_no_training_section(tmp_path: Path) -> None:
    data = yaml.safe_load(BASE)
    data["models"].append({"name": "w", "model": "winclip_tiny", "training": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"models\[2\]\.training: model 'w' \(winclip_tiny\) is training-free"):
        load_protocol(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
