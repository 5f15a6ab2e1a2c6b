"""The few-shot memory benchmark runs ``--quick``: the bank's size per reference image and layer, the k = 16 ViT-L
budget, and the streaming search's peak memory beside the full distance matrix's (reported; their ratio is the
script's result, not held to a bound in a test, since resident memory depends on the allocator and the load)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "fewshot_memory.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("fewshot_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the peak measure reads Linux's /proc")
def test_quick_run_sizes_the_bank_and_compares_the_search_peaks(bench, tmp_path, monkeypatch) -> None:
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["fewshot_memory.py", "--quick", "--models", "ad_dinov3", "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    [bank] = result["banks"]
    assert (bank["model"], bank["grid"], bank["width"], bank["shots"]) == ("ad_dinov3", 32, 1024, 16)
    assert bank["mib_per_image_and_layer"] == 32 * 32 * 1024 * 4 * 3 / 2**20  # float32, radii 1/3/5
    assert bank["mib_total"] == 16 * 4 * bank["mib_per_image_and_layer"]
    assert result["k16_fits_budget"] is True and bank["mib_total"] <= result["budget_mib"]
    search = result["search"]
    assert search["same_result"] is True
    assert search["full_matrix_mib"] == 2048 * 4096 * 4 / 2**20
    # resident peaks depend on the allocator and the machine's load: measured and reported, not held to a ratio here
    # (the op-by-op bound of the streaming search is tests/models/test_patch_memory.py's)
    assert search["stream_peak_mib"] >= 0 and search["full_matrix_peak_mib"] > 0
    assert search["full_over_stream"] == pytest.approx(
        search["full_matrix_peak_mib"] / max(search["stream_peak_mib"], 1e-9)
    )
