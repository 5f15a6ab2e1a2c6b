"""``executor:``: keys are validated, SLURM options reach sbatch, and the submitit LocalExecutor path runs a
protocol end to end into the same stage folders, with the same metrics.json as the in-process run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from medad.errors import ConfigError
from medad.protocols import run_protocol
from medad.protocols.executor import make_executor
from medad.protocols.loading import LoadedProtocol, load_protocol
from medad.protocols.resolve import config_hash, resolve_protocol
from medad.protocols.schema import ExecutorSpec

# two training seeds -> two independent train jobs and two score jobs
PROTOCOL = """\
name: executor-test
output: runs
synthetic:
  industrial: {layout: mvtec, classes: [bottle], n_normal: 3, n_abnormal: 5, size: 64, seed: 0}
  medical: {layout: mvtec_style, classes: [skin], n_normal: 3, n_abnormal: 5, size: 64, seed: 1}
models:
  - name: clean
    model: ad_dinov3_tiny
    options: {image_size: 64}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 2
  lr: 1.0e-3
  batch_size: 4
  seeds: [0, 1]
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
scoring: {batch_size: 4, chunk_size: 4}
statistics: {resamples: 20, seed: 0}
"""


@pytest.fixture
def protocol(tmp_path: Path) -> Path:
    path = tmp_path / "executor-test.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return path


def _executor_spec(lp: LoadedProtocol) -> ExecutorSpec:
    spec = resolve_protocol(lp).executor
    assert spec is not None
    return spec


def _error(protocol: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_protocol(protocol, list(overrides))
    return str(info.value)


def test_executor_keys_are_validated(protocol: Path) -> None:
    message = _error(protocol, "executor={kind: slurm, partion: gpu}")
    assert "unknown key 'partion' in executor" in message and "did you mean 'partition'" in message
    assert "executor.kind" in _error(protocol, "executor={kind: pbs}")
    assert "executor.timeout_min" in _error(protocol, "executor={kind: local, timeout_min: 0}")
    message = _error(protocol, "executor={kind: slurm}", "device=cuda")
    assert "executor.gpus_per_node" in message
    assert load_protocol(protocol, ["executor={kind: slurm, gpus_per_node: 1}", "device=cuda"]).protocol.executor


def test_executor_does_not_change_the_run_folder_hash(protocol: Path) -> None:
    plain = config_hash(resolve_protocol(load_protocol(protocol)))
    assert config_hash(resolve_protocol(load_protocol(protocol, ["executor.kind=local"]))) == plain


def test_slurm_options_reach_sbatch(protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lp = load_protocol(protocol, ["executor={kind: slurm}"])
    with pytest.raises(ConfigError, match=r"executor\.kind=local"):
        make_executor(_executor_spec(lp), tmp_path / "jobs")  # no srun on this machine
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    lp = load_protocol(
        protocol,
        [
            "executor={kind: slurm, partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32, timeout_min: 90,"
            " account: proj, setup: [module load cuda], slurm_additional_parameters: {reservation: r1}}"
        ],
    )
    executor = make_executor(_executor_spec(lp), tmp_path / "jobs")
    text = executor._executor._make_submission_file_text("CMD", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=90",
        "#SBATCH --account=proj",
        "#SBATCH --reservation=r1",
        "module load cuda",
    ):
        assert line in text, line


def test_local_executor_gives_the_in_process_metrics(
    protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the job subprocesses use as many threads as this process, so float sums run in the same order
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    plain = run_protocol(protocol, out=tmp_path / "plain", progress=False)
    fanned = run_protocol(protocol, out=tmp_path / "fanned", overrides=["executor.kind=local"], progress=False)
    assert fanned.name == plain.name
    assert (fanned / "metrics.json").read_bytes() == (plain / "metrics.json").read_bytes()
    assert (fanned / "seed_summary.json").read_bytes() == (plain / "seed_summary.json").read_bytes()
    log = (fanned / "run.log").read_text()
    assert log.count("submitted as job") == 4  # 2 seeds x (train, score)
    assert list((tmp_path / "fanned" / "_submitit").glob("*/*_result.pkl"))
    # the same content-hashed stage folders as in-process, each marked done by its job
    plain_stages = sorted(
        p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").glob("_stages/*/*/_done.json")
    )
    fanned_stages = sorted(
        p.relative_to(tmp_path / "fanned") for p in (tmp_path / "fanned").glob("_stages/*/*/_done.json")
    )
    assert fanned_stages == plain_stages
    # a re-run through the executor reuses every stage and submits nothing
    again = run_protocol(protocol, out=tmp_path / "fanned", overrides=["executor.kind=local"], progress=False)
    assert again == fanned
    assert (fanned / "run.log").read_text().count("submitted as job") == 4
