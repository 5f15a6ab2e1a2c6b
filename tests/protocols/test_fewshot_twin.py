"""The tiny twin of ``protocols/paper-fewshot-mvtec-to-medical.yaml``: tiny presets scored 0-shot and with 1 and 2
normal references (2 draws) on synthetic copies of an image-level set (Br35H, references from its own normals)
and a pixel-level one (BMAD Brain MRI, references from its train/good split), evaluated with per-shot rows and
paired k-shot vs 0-shot tests, in one run of the ordinary protocol engine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medad.utils.privacy import PRIVATE

PROTOCOL = """\
name: fewshot-twin
output: runs
synthetic:
  head: {layout: br35h, n_normal: 6, n_abnormal: 4, size: 32, seed: 0}
  brain: {layout: bmad-brainmri, n_normal: 4, n_abnormal: 3, size: 32, seed: 1}
models:
  - {name: winclip, model: winclip_tiny, image_score: max}
  - {name: anomalydino, model: anomalydino_tiny}
targets:
  - name: head
    kind: br35h
    synthetic: head
    references: {from: {target_normals: true}, shots: [1, 2], draws: 2, seed: 3}
  - name: brain
    kind: bmad_brainmri
    synthetic: brain
    references: {from: {split: train}, shots: [1, 2], draws: 2, seed: 3}
scoring: {batch_size: 8, chunk_size: 8}
metrics: [image_auroc, pixel_auroc]
statistics: {ci: percentile, resamples: 30, seed: 0}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medad.protocols.runner import run_protocol

    folder = tmp_path_factory.mktemp("fewshot")
    path = folder / "fewshot-twin.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return run_protocol(path, progress=False)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def test_draws_are_recorded_reproducible_and_nested(run_dir: Path) -> None:
    from medad.protocols.loading import load_protocol
    from medad.protocols.references import draw_target, load_pool

    record = json.loads((run_dir / PRIVATE / "references.json").read_text(encoding="utf-8"))
    assert set(record) == {"head", "brain"}
    for target in ("head", "brain"):
        sets = {(s["shots"], s["draw"]): s["case_ids"] for s in record[target]["sets"]}
        assert set(sets) == {(1, 0), (1, 1), (2, 0), (2, 1)}
        assert all(len(ids) == k for (k, _), ids in sets.items())
        assert set(sets[(1, 0)]) <= set(sets[(2, 0)]) and set(sets[(1, 1)]) <= set(sets[(2, 1)])
        assert sets[(2, 0)] != sets[(2, 1)]  # draws differ
    # the same seed draws the same images again (another process, another row order)
    lp = load_protocol(run_dir / PRIVATE / "protocol.resolved.yaml")
    spec = lp.resolved.targets[1]
    data = run_dir / "data" / "brain"
    manifest = pd.read_csv(run_dir / PRIVATE / "data" / "brain.manifest.csv")
    pool, where = load_pool(spec, data, manifest)
    again = draw_target(spec, pool.iloc[::-1].reset_index(drop=True), where).record()["sets"]
    assert [sorted(s["case_ids"]) for s in again] == [sorted(s["case_ids"]) for s in record["brain"]["sets"]]
    # every model's predictions record the draw by case id (shareable meta.json)
    meta = json.loads((run_dir / "predictions" / "winclip.2-shot.d1" / "brain" / "meta.json").read_text())
    assert meta["references"]["case_ids"] == next(
        s["case_ids"] for s in record["brain"]["sets"] if (s["shots"], s["draw"]) == (2, 1)
    )


def test_references_never_among_targets(run_dir: Path) -> None:
    record = json.loads((run_dir / PRIVATE / "references.json").read_text(encoding="utf-8"))
    per_image = pd.read_csv(run_dir / "evaluation" / "per_image.csv", dtype={"case_id": str})
    for target in ("head", "brain"):
        drawn = {i for s in record[target]["sets"] for i in s["case_ids"]}
        scored = set(per_image.loc[per_image["dataset"] == target, "case_id"])
        assert drawn and not drawn & scored
    # the head target's own normals drawn for any shot count or draw are left out of every run, 0-shot included
    head = per_image[per_image["dataset"] == "head"]
    assert head.groupby("model")["case_id"].apply(frozenset).nunique() == 1
    assert record["head"]["removed_from_targets"] == len({i for s in record["head"]["sets"] for i in s["case_ids"]})
    assert len(head[head["model"] == "winclip"]) == 10 - record["head"]["removed_from_targets"]


def test_per_shot_rows_with_intervals_that_hold_the_mean(run_dir: Path) -> None:
    rows = _metrics(run_dir)["fewshot"]
    table = {(r["model"], r["shots"], r["dataset"], r["class_name"], r["metric"]): r for r in rows}
    for dataset in ("head", "brain"):
        for shots in (0, 1, 2):
            row = table[("winclip", shots, dataset, "__mean__", "image_auroc")]
            assert row["n_draws"] == (1 if shots == 0 else 2)
            assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert ("anomalydino", 0, dataset, "__mean__", "image_auroc") not in table  # no 0-shot run
        assert table[("anomalydino", 2, dataset, "__mean__", "image_auroc")]["value"] is not None
    # the mean over draws is the mean of the draws' own rows
    by_run = {(r["model"], r["dataset"], r["class_name"], r["metric"]): r["value"] for r in _metrics(run_dir)["rows"]}
    row = table[("winclip", 2, "brain", "__mean__", "pixel_auroc")]
    draws = [by_run[(label, "brain", "__mean__", "pixel_auroc")] for label in row["runs"]]
    assert row["runs"] == ["winclip.2-shot.d0", "winclip.2-shot.d1"]
    assert row["value"] == pytest.approx(sum(draws) / 2, abs=1e-9)
    # pixel metrics are not applicable on the image-level set
    head_pixel = table[("winclip", 1, "head", "__mean__", "pixel_auroc")]
    assert head_pixel["status"] == "not_applicable" and head_pixel["value"] is None
    rows = _metrics(run_dir)["rows"]
    reasons = {r["reason"] for r in rows if r["dataset"] == "head" and r["metric"] == "pixel_auroc"}
    assert reasons and all(r.startswith("the dataset has no masks (image labels only)") for r in reasons)


def test_datasets_are_named_by_their_source(run_dir: Path) -> None:
    titles = _metrics(run_dir)["settings"]["dataset_titles"]
    assert titles == {"head": "Br35H (Kaggle)", "brain": "Brain MRI (BMAD, BraTS 2021)"}
    text = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "brain — Brain MRI (BMAD, BraTS 2021)" in text and "head — Br35H (Kaggle)" in text


def test_paired_kshot_against_zero_shot_holm(run_dir: Path) -> None:
    comps = json.loads((run_dir / "evaluation" / "comparisons.json").read_text(encoding="utf-8"))
    pairs = {(c["model_a"], c["model_b"]) for c in comps}
    assert ("winclip.1-shot.d0", "winclip") in pairs and ("winclip.2-shot.d1", "winclip") in pairs
    assert not any(b == "anomalydino" for _, b in pairs)
    assert {c["correction"] for c in comps} == {"holm"}
    assert all(c["p_adjusted"] is None or c["p_adjusted"] >= c["p_value"] for c in comps)


def test_report_names_models_by_shots(run_dir: Path) -> None:
    text = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Few-shot" in text
    for label in ("winclip · 0-shot", "winclip · 2-shot", "anomalydino · 1-shot"):
        assert label in text
    assert "anomalydino · 0-shot" not in text
    assert any(p.name.startswith("fewshot") for p in (run_dir / "report").rglob("*.png"))


def test_shipped_fewshot_protocol_validates_and_lists_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    path = repo / "protocols" / "paper-fewshot-mvtec-to-medical.yaml"
    monkeypatch.delenv("MEDAD_DATA", raising=False)
    monkeypatch.delenv("MEDAD_WEIGHTS", raising=False)
    done = subprocess.run([sys.executable, "-m", "medad.cli", "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for missing in ("targets[0].root", "targets[8].root", "models[7].weights.backbone.file"):
        assert missing in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "medad.cli", "validate", str(path), "--structure-only"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_rerun_reuses_every_stage_and_gives_the_same_metrics(run_dir: Path) -> None:
    """Stage keys are stable: the same protocol again reuses every score stage (0-shot and few-shot draws)."""
    from medad.protocols.runner import run_protocol

    before = (run_dir / "metrics.json").read_bytes()
    log = run_dir / "run.log"
    scored = [line for line in log.read_text(encoding="utf-8").splitlines() if "score " in line and "done" in line]
    assert len(scored) == 17  # 1 zero-shot + 16 few-shot stages, scored once
    stages = json.loads((run_dir / "stages.json").read_text(encoding="utf-8"))
    assert {"score/winclip", "score/winclip.2-shot.d1 brain", "score/anomalydino.1-shot.d0 head"} <= set(stages)
    again = run_protocol(run_dir.parents[2] / "fewshot-twin.yaml", progress=False)
    assert again == run_dir
    assert json.loads((again / "stages.json").read_text(encoding="utf-8")) == stages
    assert (again / "metrics.json").read_bytes() == before
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if "score " in line and "done" in line] == scored  # nothing scored again
    assert sum("score " in line and "reused" in line for line in lines) >= 17  # 1 zero-shot + 16 few-shot stages
