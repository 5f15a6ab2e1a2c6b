"""Wall time of the README's demo (``medad run protocols/demo.yaml``) and the figures that show it works.

Runs the demo protocol in a fresh temporary output folder (nothing reused from an earlier run), times it, and
prints, from the run folder it writes: the wall time, the CPU load average before and after (the time only
means something with the load it was measured under), and the ``clean`` model's pixel AUROC on each target
(class mean from ``metrics.json``) and the standard deviation of its image scores on each target with normal
images (``evaluation/per_image.csv``). The demo's targets: pixel AUROC >= 0.90 on both medical targets and an
image-score standard deviation >= 0.02 where there are normals. The weights are random and the data synthetic:
the figures show that the pipeline localises synthetic lesions, nothing about real performance.

Examples:
    python benchmarks/demo_time.py                  # the demo as the README runs it
    python benchmarks/demo_time.py --threads 2      # limit torch to 2 threads (the README's "2 CPU cores")
    python benchmarks/demo_time.py --json           # one JSON object instead of the text lines
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "protocols" / "demo.yaml"


def demo_figures(run_dir: Path, model: str = "clean") -> dict[str, dict[str, float | None]]:
    """Per target of ``model``: class-mean pixel AUROC and, where it has normal images, the image-score std."""
    rows = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["rows"]
    figures: dict[str, dict[str, float | None]] = {}
    for row in rows:
        if row["model"] == model and row["metric"] == "pixel_auroc" and row["class_name"] == "__mean__":
            figures.setdefault(row["dataset"], {})["pixel_auroc"] = row["value"]
    scores: dict[str, list[tuple[int, float]]] = {}
    with open(run_dir / "evaluation" / "per_image.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["model"] == model:
                scores.setdefault(row["dataset"], []).append((int(row["label"]), float(row["image_score"])))
    for dataset, pairs in scores.items():
        has_normals = any(label == 0 for label, _ in pairs)
        spread = statistics.pstdev(s for _, s in pairs) if has_normals else None
        figures.setdefault(dataset, {})["image_score_std"] = spread
    return figures


def run_demo(out: Path, threads: int | None) -> tuple[float, Path]:
    """Run the demo into ``out``; return its wall time in seconds and the run folder (the last line printed)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-c", "from medad.cli import main; main()", "run", str(DEMO), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run([*command, "--no-progress"], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the demo failed with exit code {done.returncode}:\n{done.stderr[-4000:]}")
    return wall, Path(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Time the demo once and print its wall time, the load and the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads for the run (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medad-demo-") as tmp:
        wall, run_dir = run_demo(Path(tmp) / "runs", args.threads)
        figures = demo_figures(run_dir)
    result: dict[str, Any] = {
        "wall_s": round(wall, 1),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "clean": figures,
        "weights": "random (synthetic data)",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    threads = args.threads or "default"
    print(f"demo wall time: {result['wall_s']} s on {result['cpu_count']} CPU cores (threads: {threads})")
    print(f"load average (1 min): {result['load_1min_before']} before, {result['load_1min_after']} after")
    for dataset, values in sorted(figures.items()):
        auroc, spread = values.get("pixel_auroc"), values.get("image_score_std")
        line = f"clean / {dataset}: " + (f"pixel AUROC {auroc:.4f}" if auroc is not None else "no pixel AUROC")
        line += f", image-score std {spread:.4f}" if spread is not None else ", no normal images"
        print(line)
    print("(random frozen weights, synthetic data: the figures say nothing about real performance)")


if __name__ == "__main__":
    main()
