"""The scoring benchmark measures what its flags say (a dropped ``--compile`` once went unnoticed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "scoring_throughput.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("scoring_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("compile", [False, True])
def test_time_medad_scores_with_the_requested_compile_flag(bench, tmp_path, monkeypatch, compile) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(bench, "score", lambda model, manifest, out, **kw: calls.append(kw))
    manifest = pd.DataFrame({"image_path": [f"x{i}.png" for i in range(8)]})
    rate = bench.time_medad(None, manifest, torch.device("cpu"), 2, 0, tmp_path, compile)
    assert rate > 0
    assert len(calls) == 2  # warm-up, then the timed pass
    assert all(call["compile"] is compile and call["batch_size"] == 2 and not call["tile"] for call in calls)
    bench.time_medad(None, manifest, torch.device("cpu"), 2, 0, tmp_path, False, tile=True)
    assert [call["tile"] for call in calls[2:]] == [True, True]
