"""The ONNX CPU benchmark runs both engines on the same images and reports a ratio."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "onnx_cpu.py"


def test_benchmark_runs_on_the_tiny_model() -> None:
    spec = importlib.util.spec_from_file_location("onnx_cpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(
        ["--backbone", "tiny", "--images", "4", "--batch-size", "2", "--repeats", "1", "--threads", "1"]
    )
    assert result["pytorch_eager_images_per_s"] > 0 and result["onnxruntime_images_per_s"] > 0
    ratio = result["pytorch_eager_images_per_s"] / result["onnxruntime_images_per_s"]
    assert abs(result["ratio_onnxruntime_over_pytorch"] * ratio - 1) < 1e-9
    assert result["max_abs_diff"] <= 1e-4 and result["random_weights"] is True
