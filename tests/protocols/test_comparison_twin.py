"""The tiny twin of the shipped comparison protocols (``protocols/paper-comparison-*.yaml``): every method's
``*_tiny`` preset trained (one epoch) on a synthetic industrial set, scored on a synthetic medical one, evaluated,
and paired with AD-DINOv3 under Holm correction, in one run of the ordinary protocol engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TRAINED = ("ad_dinov3", "anomalyclip", "adaclip", "aa_clip", "crane", "crane_plus")
FREE = ("winclip", "mutual")

PROTOCOL = """\
name: comparison-twin
output: runs
synthetic:
  industrial: {layout: mvtec, classes: [bottle], n_normal: 2, n_abnormal: 4, size: 64, seed: 0}
  medical: {layout: mvtec_style, classes: [skin], n_normal: 3, n_abnormal: 5, size: 64, seed: 1}
models:
  - {name: ad_dinov3, model: ad_dinov3_tiny, options: {image_size: 64}, class_words: {medical: {skin: skin lesion}}}
  - {name: anomalyclip, model: anomalyclip_tiny, image_score: global, class_words: {medical: {skin: skin lesion}}}
  - {name: adaclip, model: adaclip_tiny, image_score: global, class_words: {medical: {skin: skin lesion}}}
  - name: aa_clip
    model: aa_clip_tiny
    image_score: max
    options: {domain: medical}
    class_words: {medical: {skin: skin lesion}}
  - {name: crane, model: crane_tiny, image_score: global, class_words: {medical: {skin: skin lesion}}}
  - name: crane_plus
    model: crane_plus_tiny
    image_score: global
    class_words: {medical: {skin: skin lesion}}
    training: {score_epoch: 1}
  - {name: winclip, model: winclip_tiny, image_score: global, class_words: {medical: {skin: skin lesion}}}
  - {name: mutual, model: dinov3_mutual_tiny, image_score: max}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 1
  lr: 1.0e-3
  batch_size: 6
  weight_decay: 0.0
  warmup: 0.0
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
scoring: {batch_size: 8, chunk_size: 8}
metrics: [pixel_auroc, pixel_ap, pixel_f1_max, aupro]
statistics:
  ci: bca
  resamples: 20
  seed: 0
  comparisons: [COMPARISONS]
  correction: holm
""".replace("COMPARISONS", ", ".join(f"[ad_dinov3, {m}]" for m in TRAINED[1:] + FREE))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medad.protocols.runner import run_protocol

    path = tmp_path_factory.mktemp("twin") / "comparison-twin.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return run_protocol(path, progress=False)


def test_every_method_is_trained_scored_and_evaluated(run_dir: Path) -> None:
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(TRAINED)
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    for model in TRAINED + FREE:
        for metric in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"):
            row = next(r for r in rows if (r["model"], r["class_name"], r["metric"]) == (model, "skin", metric))
            assert row["status"] == "ok" and 0.0 <= row["value"] <= 1.0 and row["n_images"] == 8, (model, metric)
    cards = json.loads((run_dir / "provenance.json").read_text())["weights"]
    assert {name: cards[name]["card"]["name"] for name in ("aa_clip", "crane_plus")} == {
        "aa_clip": "aa_clip_tiny",
        "crane_plus": "crane_plus_tiny",
    }


def seeded_twin(folder: Path, models: tuple[str, ...]) -> str:
    """The twin with two seeds and only ``models`` (written next to the first run: its seed-0 stages are reused)."""
    data = yaml.safe_load(PROTOCOL)
    data["models"] = [m for m in data["models"] if m["name"] in models]
    data["training"]["seeds"] = [0, 1]
    data["statistics"]["comparisons"] = [c for c in data["statistics"]["comparisons"] if c[1] in models]
    path = folder / "comparison-twin-seeds.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_every_method_is_paired_with_ad_dinov3_under_holm(run_dir: Path) -> None:
    comps = json.loads((run_dir / "evaluation" / "comparisons.json").read_text())
    assert {(c["model_a"], c["model_b"]) for c in comps} == {("ad_dinov3", m) for m in TRAINED[1:] + FREE}
    tested = [c for c in comps if c["p_value"] is not None]
    assert tested and all(c["correction"] == "holm" and c["p_adjusted"] >= c["p_value"] - 1e-12 for c in tested)


@pytest.mark.parametrize("name", ["paper-comparison-mvtec-to-medical", "paper-comparison-visa-to-mvtec"])
def test_the_twin_has_the_shipped_protocols_methods_and_comparisons(name: str) -> None:
    from medad.protocols.validate import validate_protocol

    shipped = validate_protocol(REPO / "protocols" / f"{name}.yaml", structure_only=True).protocol
    twin = yaml.safe_load(PROTOCOL)
    assert [m.name for m in shipped.models] == [m["name"] for m in twin["models"]]
    for spec, tiny in zip(shipped.models, twin["models"], strict=True):
        assert tiny["model"] in (f"{spec.model}_tiny", "dinov3_mutual_tiny" if spec.model == "dinov3_mutual" else "")
    assert shipped.statistics.comparisons == [[a, b] for a, b in yaml.safe_load(PROTOCOL)["statistics"]["comparisons"]]
    assert shipped.statistics.correction == "holm" and shipped.statistics.ci == "bca"
    assert shipped.training is not None and shipped.training.seeds == [0, 1, 2]
    own = {m.name: m.training for m in shipped.models if m.training is not None}  # each release's recipe
    assert sorted(own) == ["aa_clip", "ad_dinov3", "adaclip", "crane", "crane_plus"]
    pinned = 1 if name.endswith("medical") else None  # Crane+'s release scores medical sets with epoch 1
    assert own["crane_plus"].score_epoch == pinned and own["adaclip"].lr == 1.0e-2


def test_each_seed_is_paired_and_training_free_models_are_scored_once(run_dir: Path) -> None:
    from medad.protocols.runner import run_protocol

    seeded = run_protocol(seeded_twin(run_dir.parents[2], ("ad_dinov3", "adaclip", "winclip")), progress=False)
    assert sorted(p.name for p in (seeded / "checkpoints").iterdir()) == [
        f"{m}-seed{s}" for m in ("ad_dinov3", "adaclip") for s in (0, 1)
    ]
    comps = json.loads((seeded / "evaluation" / "comparisons.json").read_text())
    assert {(c["model_a"], c["model_b"]) for c in comps} == {
        (f"ad_dinov3-seed{s}", other) for s in (0, 1) for other in (f"adaclip-seed{s}", "winclip")
    }


def test_validate_lists_every_missing_root_and_weight_of_the_medical_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.protocols.test_validate import cli

    monkeypatch.setenv("MEDAD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MEDAD_WEIGHTS", str(tmp_path / "weights"))
    code, _, err = cli(["validate", str(REPO / "protocols" / "paper-comparison-mvtec-to-medical.yaml")], capsys)
    assert code == 2 and "16 missing" in err
    for folder in ("mvtec_anomaly_detection", "ISIC2016", "CVC-ColonDB", "CVC-ClinicDB", "TN3K", "Kvasir-SEG"):
        assert f"{tmp_path}/data/{folder} does not exist" in err
    for index, role in [(0, "backbone"), (0, "text"), *((i, "clip") for i in range(1, 6)), (5, "backbone")]:
        assert f"models[{index}].weights.{role}.file" in err
    assert "models[6].weights.text.file" in err and "models[7].weights.backbone.file" in err
