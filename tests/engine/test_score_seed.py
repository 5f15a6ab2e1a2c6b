"""Scoring without a checkpoint is reproducible: the model is built under a recorded seed, the same command gives
the same bytes, and a resume refuses a model built under another seed (one table never mixes two models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medad.engine.request import ScoreRequest, ScoreSettings
from medad.engine.scorer import score_files
from medad.errors import ConfigError, DataError
from tests.cli import run_medad


def _images(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"img_{k}.png")
    return folder


def _score(monkeypatch, capsys, images: Path, out: Path, *extra: str) -> tuple[int, str]:
    args = ["score", str(images), "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu", *extra]
    return run_medad(monkeypatch, capsys, *args)


def test_the_same_score_command_twice_gives_byte_identical_tables(tmp_path, monkeypatch, capsys) -> None:
    images = _images(tmp_path / "imgs")
    code, text = _score(monkeypatch, capsys, images, tmp_path / "a")
    assert code == 0, text
    torch.rand(1000)  # the global random state moves on between the two runs, as in two fresh processes
    code, text = _score(monkeypatch, capsys, images, tmp_path / "b")
    assert code == 0, text
    assert (tmp_path / "a" / "scores.csv").read_bytes() == (tmp_path / "b" / "scores.csv").read_bytes()
    meta = json.loads((tmp_path / "a" / "predictions" / "meta.json").read_text())
    assert meta["seed"] == 0 and len(meta["weights_sha256"]) == 64

    code, text = _score(monkeypatch, capsys, images, tmp_path / "c", "--seed", "7")
    assert code == 0, text
    other = json.loads((tmp_path / "c" / "predictions" / "meta.json").read_text())
    assert other["seed"] == 7 and other["weights_sha256"] != meta["weights_sha256"]
    assert (tmp_path / "c" / "scores.csv").read_bytes() != (tmp_path / "a" / "scores.csv").read_bytes()


def test_a_resume_under_another_seed_is_refused_and_the_same_seed_resumes(tmp_path, monkeypatch, capsys) -> None:
    images = _images(tmp_path / "imgs", n=4)
    out = tmp_path / "out"
    score_files([images], out, model_name="ad_dinov3_tiny", device="cpu", progress=False, batch_size=2, chunk_size=2)
    before = (out / "scores.csv").read_bytes()
    chunks = sorted((out / "predictions" / "chunks").iterdir())
    assert len(chunks) == 2
    chunks[-1].unlink()  # as if killed after the first chunk: the rest is still to score

    code, text = _score(monkeypatch, capsys, images, out, "--seed", "3")
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1, text
    assert "built under seed 0" in lines[0] and "seed 3" in lines[0] and "--seed 0" in lines[0]
    assert "Traceback" not in text

    code, text = _score(monkeypatch, capsys, images, out)
    assert code == 0, text
    assert (out / "scores.csv").read_bytes() == before


def test_the_library_takes_a_typed_request_or_keywords_alike(tmp_path) -> None:
    images = _images(tmp_path / "imgs", n=2)
    settings = ScoreSettings(batch_size=2, device="cpu", seed=4)
    request = ScoreRequest(paths=(images,), out_dir=tmp_path / "typed", model_name="ad_dinov3_tiny",
                           heatmaps=False, progress=False, settings=settings)  # fmt: skip
    typed = score_files(request)
    keywords = score_files([images], tmp_path / "kw", model_name="ad_dinov3_tiny", heatmaps=False, progress=False,
                           batch_size=2, device="cpu", seed=4)  # fmt: skip
    assert typed["image_score"].tolist() == keywords["image_score"].tolist()
    assert (tmp_path / "typed" / "scores.csv").read_bytes() == (tmp_path / "kw" / "scores.csv").read_bytes()
    with pytest.raises(ConfigError, match="unknown option"):
        score_files([images], tmp_path / "x", model_name="ad_dinov3_tiny", batch_sise=2)
    with pytest.raises(DataError, match="seed 4"):
        score_files([images], tmp_path / "kw", model_name="ad_dinov3_tiny", progress=False, device="cpu", seed=5)
