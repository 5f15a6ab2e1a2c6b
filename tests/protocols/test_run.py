"""End-to-end protocol runs: run folder, provenance, byte-identical re-runs and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.protocols.stall_run import command
from tests.timeouts import HANG_S

# A small protocol through the same code as protocols/demo.yaml: synthetic industrial training data, a
# synthetic medical target with normals, the tiny model at 64 px, small chunks so that scoring is resumable
# mid-way, and a PNG export.
PROTOCOL = """\
name: resume-test
output: runs
synthetic:
  industrial: {layout: mvtec, classes: [bottle], n_normal: 4, n_abnormal: 8, size: 64, seed: 0}
  medical: {layout: mvtec_style, classes: [skin], n_normal: 4, n_abnormal: 8, size: 64, seed: 1}
models:
  - name: clean
    model: ad_dinov3_tiny
    options: {image_size: 64}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 2
  lr: 1.0e-3
  batch_size: 6
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
scoring: {batch_size: 2, chunk_size: 2}
statistics: {resamples: 50, seed: 0}
exports:
  - formats: [png]
"""


def medad(args: list[str], cwd: Path, stall: str | None = None) -> subprocess.Popen[str]:
    """A ``medad`` subprocess; ``stall`` (``STAGE:N``): it stops responding there (tests/protocols/stall_run.py)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = (
        [sys.executable, "-c", "from medad.cli import main; main()", *args] if stall is None else command(stall, args)
    )
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_to_end(protocol: Path, out: Path) -> Path:
    proc = medad(["run", str(protocol), "--out", str(out), "--no-progress"], protocol.parent)
    stdout, stderr = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, stderr
    return Path(stdout.strip().splitlines()[-1])


def kill_when_stalled(protocol: Path, out: Path, stall: str, written: str | None = None) -> None:
    """Start a run that stalls at ``stall`` (``STAGE:N``), wait for it, and SIGKILL it.

    ``written``: a glob under ``out`` that must match a file before the kill. The scorer's background writer
    keeps writing finished batches while the main thread stalls, so the test waits for it instead of racing it.
    """
    proc = medad(["run", str(protocol), "--out", str(out), "--no-progress"], protocol.parent, stall)
    assert proc.stderr is not None
    deadline = time.monotonic() + HANG_S
    for line in proc.stderr:
        if "medad: stalled" in line:
            break
        assert time.monotonic() < deadline, "the run never reached its stall point"
    else:
        pytest.fail(f"run ended before stalling at {stall}: exit {proc.wait()}")
    while written is not None and not any(out.glob(written)):
        assert time.monotonic() < deadline, f"nothing matched {written} while the run stalled"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "resume-test.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def baseline(protocol: Path) -> Path:
    return run_to_end(protocol, protocol.parent / "out-baseline")


def test_run_folder_holds_metrics_report_export_and_provenance(baseline: Path) -> None:
    assert baseline.parent.name == "resume-test" and len(baseline.name) == 16
    metrics = json.loads((baseline / "metrics.json").read_text())
    rows = {(r["model"], r["dataset"], r["class_name"], r["metric"]): r for r in metrics["rows"]}
    assert rows[("clean", "medical", "skin", "pixel_auroc")]["status"] == "ok"
    assert "started_at" not in (baseline / "metrics.json").read_text()
    assert (baseline / "report" / "report.html").is_file()
    assert list((baseline / "exports").glob("*/*_overlay.png"))
    assert (baseline / "protocol.resolved.yaml").is_file()
    prov = json.loads((baseline / "provenance.json").read_text())
    assert prov["protocol"]["config_hash"] == baseline.name
    assert {"torch", "timm", "open_clip_torch", "monai", "numpy", "medad"} <= set(prov["versions"])
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["device"]["device"] == "cpu" and prov["device"]["dtype"] == "float32"
    assert "tf32_matmul" in prov["device"]
    assert prov["seeds"] == {"training": [0], "statistics": 0}
    assert prov["weights"]["clean"]["card"]["random_weights"] is True
    manifest = (baseline / prov["data"]["medical"]["manifest"]).read_text().splitlines()
    assert len(manifest) == 13 and "sha256" in manifest[0]
    assert prov["leakage"] == {"intended_overlap": False, "notes": []}


def test_second_run_reuses_everything_and_metrics_are_byte_identical(protocol: Path, baseline: Path) -> None:
    before = (baseline / "metrics.json").read_bytes()
    again = run_to_end(protocol, protocol.parent / "out-baseline")
    assert again == baseline
    assert (again / "metrics.json").read_bytes() == before
    log = (again / "run.log").read_text().splitlines()
    second = log[max(i for i, line in enumerate(log) if " started " in line) :]
    assert any("train clean: reused" in line for line in second)
    assert not any(line.endswith(": done") and (" train " in line or " score " in line) for line in second)


def test_killed_during_scoring_and_evaluation_resumes_to_identical_metrics(protocol: Path, baseline: Path) -> None:
    out = protocol.parent / "out-killed"
    kill_when_stalled(protocol, out, "score:4", written="_stages/score/*/predictions/chunks/*.npz")
    stages = out / "_stages"
    score_dirs = list((stages / "score").iterdir())
    assert len(score_dirs) == 1 and not (score_dirs[0] / "_done.json").exists()
    chunks = list((score_dirs[0] / "predictions" / "chunks").glob("*.npz"))
    assert 1 <= len(chunks) < 6  # 12 images in chunks of 2: killed part-way
    train_done = next((stages / "train").iterdir()) / "_done.json"
    trained_at = train_done.stat().st_mtime_ns

    kill_when_stalled(protocol, out, "evaluate:3")
    assert (score_dirs[0] / "_done.json").exists()
    assert not any((d / "_done.json").exists() for d in (stages / "evaluate").iterdir())
    kept = [c for c in chunks if c.exists()]
    assert kept == chunks  # finished chunks were kept, not recomputed

    resumed = run_to_end(protocol, out)
    assert resumed.name == baseline.name
    assert (resumed / "metrics.json").read_bytes() == (baseline / "metrics.json").read_bytes()
    assert train_done.stat().st_mtime_ns == trained_at
