"""The per-method cost benchmark runs ``--quick`` end to end and writes the rows it prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "methods_cost.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("methods_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_a_row_with_training_and_both_scoring_rates(bench, tmp_path, monkeypatch) -> None:
    out = tmp_path / "rows.json"
    argv = ["methods_cost.py", "--quick", "--methods", "anomalyclip", "--n-images", "2", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    bench.main()
    [row] = json.loads(out.read_text())
    assert (row["method"], row["size"], row["model"], row["images"]) == ("anomalyclip", "tiny", "anomalyclip_tiny", 2)
    assert row["device"] == "cpu" and row["repeats"] == 1
    assert row["train_step_s_batch8"] > 0
    assert row["images_per_s_batch8"] > 0 and row["images_per_s_batch1"] > 0
    assert row["batch8_over_batch1"] == pytest.approx(row["images_per_s_batch8"] / row["images_per_s_batch1"], rel=0.05)


def test_every_method_has_a_vit_b_configuration_of_a_registered_model(bench) -> None:
    from medad.models import list_models

    names = set(list_models())
    assert set(bench.METHODS) <= names and {f"{m}_tiny" for m in bench.METHODS} <= names
    assert set(bench.VIT_B) == set(bench.METHODS)
