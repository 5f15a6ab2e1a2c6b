"""Start-up time of the command line: how long a user waits for ``--help``, an argument error or ``validate``.

Each command runs in a fresh interpreter, ``--repeats`` times, interleaved with ``python -c "import torch"`` in the
same run, so that the figures compare under the same load: the printed ratio ``validate / import torch`` is what
to read on a busy machine (below 1: validate does not wait for torch; about 1 or more: it loads torch). Prints the
median wall time of each command, the CPU count and the load average before and after.

Examples:
    python benchmarks/startup.py                # 5 repeats of each command
    python benchmarks/startup.py --repeats 10 --json
    # before / after: the same script on two checkouts, run side by side (same load)
    PYTHONPATH=/path/to/old python benchmarks/startup.py --json & PYTHONPATH=. python benchmarks/startup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medad.data.registry import write_layout

MEDAD = [sys.executable, "-c", "from medad.cli import main; main()"]
COMMANDS: dict[str, list[str]] = {
    "import torch": [sys.executable, "-c", "import torch"],
    "medad --help": [*MEDAD, "--help"],
    "medad train --data MISSING": [*MEDAD, "train", "--data", "missing-folder", "--out", "out"],
    "medad datasets check MISSING": [*MEDAD, "datasets", "check", "missing-folder"],
    "medad datasets check ISIC (3 images)": [*MEDAD, "datasets", "check", "isic"],
    "medad validate demo --structure-only": [*MEDAD, "validate", "demo", "--structure-only"],
    "medad validate demo": [*MEDAD, "validate", "demo"],
    "medad validate paper-comparison-mvtec-to-medical": [*MEDAD, "validate", "paper-comparison-mvtec-to-medical"],
}


def time_commands(repeats: int, cwd: Path) -> dict[str, list[float]]:
    """Wall seconds of every command, ``repeats`` rounds, the commands interleaved within a round."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of every command (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        write_layout(Path(folder) / "isic", "isic2016", n_abnormal=3, size=32)  # a small ISIC 2016 test split
        times = time_commands(args.repeats, Path(folder))
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "median_s": {name: round(value, 3) for name, value in median.items()},
        "validate_over_import_torch": round(median["medad validate demo"] / median["import torch"], 2),
        "structure_only_over_import_torch": round(
            median["medad validate demo --structure-only"] / median["import torch"], 2
        ),
        "validate_every_method_over_import_torch": round(
            median["medad validate paper-comparison-mvtec-to-medical"] / median["import torch"], 2
        ),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, value in median.items():
        print(f"{name:<40} {value:7.2f} s")
    print(f"validate / import torch: {result['validate_over_import_torch']}")
    print(f"validate --structure-only / import torch: {result['structure_only_over_import_torch']}")
    print(f"validate (every method) / import torch: {result['validate_every_method_over_import_torch']}")
    print(f"{result['cpus']} CPUs; load average {result['load_before']} before, {result['load_after']} after")


if __name__ == "__main__":
    main()
