"""Several processes (gloo on CPU, 2 ranks): DDP training and sharded scoring equal one process.

One ``torch.multiprocessing.spawn`` session runs both the training (interrupted after epoch 1 and resumed) and
the sharded scoring, so the 2-rank workers import torch and medad once; a ``torchrun`` run checks the CLI hook.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import medad
from medad.engine.distributed import DDPTraining, DistEnv, shard_indices
from tests.timeouts import HANG_S

WORLD = 2
SETTINGS = dict(epochs=2, lr=1e-3, batch_size=8, micro_batch_size=4, seed=5, progress=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model(seed: int = 0):
    from medad.models import create_model

    torch.manual_seed(seed)
    return create_model("ad_dinov3_tiny", image_size=64)


def _manifest(root: Path) -> pd.DataFrame:
    from medad.data import load_manifest

    return load_manifest(root, "mvtec", split="test")


class _StopError(Exception):
    pass


def _worker(rank: int, port: int, data: str, work: str) -> None:
    """One rank: train 1 epoch, get interrupted, resume to 2 epochs; then score a shard with other adapters."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from medad.engine.distributed import cleanup
    from medad.engine.scorer import score
    from medad.engine.train import train

    work_dir = Path(work)
    manifest = _manifest(Path(data))

    def stop(epoch: int, _stats: dict) -> None:
        if epoch == 1:
            raise _StopError

    options = dict(SETTINGS, device="cpu", cache_dir=work_dir / "cache")
    with contextlib.suppress(_StopError):
        train(_model(), manifest, work_dir / "ddp", on_epoch_end=stop, distributed=True, **options)
    # a fresh model with other initial adapters: the resumed run must load them from the checkpoint
    result = train(_model(seed=100 + rank), manifest, work_dir / "ddp", distributed=True, **options)
    torch.save(
        {"resumed_from": result.resumed_from, "steps": result.steps, "history": result.history},
        work_dir / f"train_rank{rank}.pt",
    )
    # scoring: rank 1 starts from other adapters; rank 0's are broadcast before scoring
    score(
        _model(seed=0 if rank == 0 else 7),
        manifest.iloc[:11],
        work_dir / "pred",
        device="cpu",
        batch_size=3,
        chunk_size=2,
        progress=False,
        distributed=True,
    )
    cleanup()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medad.data import write_layout

    data = tmp_path_factory.mktemp("industrial")
    write_layout(data, "mvtec", n_normal=2, n_abnormal=4, size=64, seed=3)  # 2 classes x 6 = 12 images
    work = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(data), str(work)), nprocs=WORLD, join=True)
    return work


def test_shards_are_disjoint_and_cover_every_index() -> None:
    for mode in ("strided", "contiguous"):
        for n in (0, 1, 7, 12):
            shards = [shard_indices(n, r, 3, mode) for r in range(3)]
            assert sorted(i for s in shards for i in s) == list(range(n)), (mode, n)
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shard_indices(7, 1, 3, "contiguous") == [3, 4]


def test_split_gives_each_rank_its_micro_batches_and_pads_short_steps() -> None:
    batch = list(range(8))
    ranks = [DDPTraining(DistEnv(r, 2), torch.device("cpu")).split(batch, 2) for r in range(2)]
    assert ranks[0] == [([0, 1], 0.5, True), ([4, 5], 0.5, True)]
    assert ranks[1] == [([2, 3], 0.5, True), ([6, 7], 0.5, True)]
    # a last batch of 4 = one micro-batch of 4: rank 0 runs it at weight 2*4/4, rank 1 a zero-weight pass
    short = [DDPTraining(DistEnv(r, 2), torch.device("cpu")).split([8, 9, 10, 11], 4) for r in range(2)]
    assert short == [[([8, 9, 10, 11], 2.0, True)], [([8, 9, 10, 11], 0.0, False)]]


def test_ddp_training_equals_one_process_and_resumes(spawned: Path, tmp_path: Path) -> None:
    from medad.engine.train import train

    manifest = _manifest(Path(str(spawned).replace("ddp", "industrial")))
    ref = train(_model(), manifest, tmp_path / "one", device="cpu", cache_dir=tmp_path / "cache", **SETTINGS)
    ddp_ckpt = spawned / "ddp" / "checkpoints" / "epoch_002"
    assert sorted(p.name for p in (spawned / "ddp" / "checkpoints").iterdir()) == ["epoch_001", "epoch_002"]
    expected = load_file(str(ref.checkpoint / "adapters.safetensors"))
    got = load_file(str(ddp_ckpt / "adapters.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5, msg=name)
    # Adam's first moments are proportional to the gradients: a wrong loss scale would show here
    ref_state = torch.load(ref.checkpoint / "train_state.pt", weights_only=True)
    ddp_state = torch.load(ddp_ckpt / "train_state.pt", weights_only=True)
    assert ddp_state["step"] == ref_state["step"] == 4 and ddp_state["settings_hash"] == ref_state["settings_hash"]
    for key, state in ref_state["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(
                ddp_state["optimizer"]["state"][key][moment], state[moment], rtol=1e-4, atol=1e-9
            )
    ranks = [torch.load(spawned / f"train_rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for info in ranks:
        assert info["resumed_from"] == 1 and info["steps"] == 4
        # loss statistics are reduced over ranks: the same epoch means as one process
        assert info["history"][0]["total"] == pytest.approx(ref.history[1]["total"], rel=1e-5)
    card = json.loads((ddp_ckpt / "card.json").read_text())
    assert card["extra"]["training"]["loss"] == pytest.approx(ref.history[1]["total"], rel=1e-5)


def test_sharded_scoring_equals_one_process_exactly_once(spawned: Path, tmp_path: Path) -> None:
    from medad.engine.predictions import PredictionReader
    from medad.engine.scorer import score

    manifest = _manifest(Path(str(spawned).replace("ddp", "industrial"))).iloc[:11]
    ref = score(_model(), manifest, tmp_path / "one", device="cpu", batch_size=4, progress=False)
    got = PredictionReader(spawned / "pred")
    assert got.indices.tolist() == list(range(11))
    tags = {p.name.split("-")[0] for p in (spawned / "pred" / "chunks").iterdir()}
    assert tags == {"r0", "r1"}
    np.testing.assert_allclose(got.image_scores, ref.image_scores, rtol=0, atol=1e-6)
    for (i, a), (j, b) in zip(got.iter_maps(), ref.iter_maps(), strict=True):
        assert i == j
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tile", [False, True])
def test_medad_score_under_torchrun(spawned: Path, tmp_path: Path, tile: bool) -> None:
    from medad.engine.scorer import score_files

    data = Path(str(spawned).replace("ddp", "industrial"))
    ckpt = spawned / "ddp" / "checkpoints" / "epoch_002"
    args = [str(data), "--kind", "mvtec", "--checkpoint", str(ckpt), "--device", "cpu", "--batch-size", "4"]
    args += ["--tile"] if tile else ["--class-word", "glass bottle"]  # a class word reaches every rank
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD)]
    cmd += ["--master_port", str(_free_port()), "-m", "medad.cli", "score", *args, "--out", str(tmp_path / "tr")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("scored 12 images") == 1  # printed by rank 0 only
    tags = {p.name.split("-")[0] for p in (tmp_path / "tr" / "predictions" / "chunks").iterdir()}
    assert tags == {"r0", "r1"}
    word = None if tile else "glass bottle"
    options = {"device": "cpu", "kind": "mvtec", "progress": False, "tile": tile, "class_word": word}
    ref = score_files([data], tmp_path / "one", checkpoint=ckpt, **options)
    assert (
        json.loads((tmp_path / "tr" / "meta.json").read_text())["class_words"]
        == json.loads((tmp_path / "one" / "meta.json").read_text())["class_words"]
    )
    got = pd.read_csv(tmp_path / "tr" / "scores.csv")
    assert got["case_id"].astype(str).tolist() == ref["case_id"].astype(str).tolist()
    np.testing.assert_allclose(got["image_score"], ref["image_score"], rtol=0, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "tr" / "heatmaps").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "heatmaps").iterdir()
    )


def test_torchrun_scoring_skips_an_unreadable_image_on_every_rank(spawned: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(str(spawned).replace("ddp", "industrial")), data)
    broken = next(data.rglob("test/*/*.png")).with_name("000_broken.png")
    broken.write_bytes(b"not a png")
    ckpt = spawned / "ddp" / "checkpoints" / "epoch_002"
    args = [str(data), "--kind", "mvtec", "--checkpoint", str(ckpt), "--device", "cpu", "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD)]
    cmd += ["--master_port", str(_free_port()), "-m", "medad.cli", "score", *args, "--out", str(tmp_path / "tr")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_S)
    # rank 0 exits 2 (torchrun then prints its own launcher traceback and exits 1); no medad frame in it
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
    # no frame of this checkout's medad package (found by its folder, not by a name the clone may carry too)
    here = Path(medad.__file__).parent
    packages = {f'"{folder}{os.sep}' for folder in (here, here.resolve())}
    frames = [line for line in proc.stderr.splitlines() if line.strip().startswith("File ")]
    assert not [line for line in frames if any(package in line for package in packages)], proc.stderr[-3000:]
    assert "12 of 13 scored; 1 skipped" in proc.stderr and str(broken) in proc.stderr
    table = pd.read_csv(tmp_path / "tr" / "scores.csv")
    assert len(table) == 12 and "000_broken" not in (tmp_path / "tr" / "scores.csv").read_text()
