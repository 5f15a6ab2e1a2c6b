"""Start-up time of the command line: how long a user waits for ``--help``, an argument error or ``validate``.

Each command runs in a fresh interpreter, ``--repeats`` times, interleaved with ``python -c "import torch"`` in the
same run, so that the figures compare under the same load: the printed ratio ``validate / import torch`` is what
to read on a busy machine (below 1: validate does not wait for torch; about 1 or more: it loads torch). Prints the
median wall time of each command, the CPU count and the load average before and after.

``--before DIR`` also times every ``medad`` command on the checkout in ``DIR`` (its code on ``PYTHONPATH``),
interleaved with this one's within each round: a before / after comparison measured in one run, under one load.

Examples:
    python benchmarks/startup.py                # 5 repeats of each command
    python benchmarks/startup.py --repeats 10 --json
    python benchmarks/startup.py --repeats 3 --before /path/to/old/checkout
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
from typing import Any

from medad.data.registry import write_layout

HERE = Path(__file__).resolve().parents[1]
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
RATIOS = {
    "validate_over_import_torch": "medad validate demo",
    "structure_only_over_import_torch": "medad validate demo --structure-only",
    "validate_every_method_over_import_torch": "medad validate paper-comparison-mvtec-to-medical",
}
"""Ratio name -> the command whose median is divided by ``import torch``'s."""


def time_commands(repeats: int, cwd: Path, checkouts: dict[str, Path]) -> dict[str, dict[str, list[float]]]:
    """Wall seconds of every command on every checkout (``import torch`` once per round), ``repeats`` rounds, the
    commands and checkouts interleaved within a round."""
    times: dict[str, dict[str, list[float]]] = {label: {} for label in checkouts}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            for label, root in checkouts.items():
                if name == "import torch" and label != "after":
                    continue
                env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
                start = time.perf_counter()
                subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
                times[label].setdefault(name, []).append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]], torch_s: float) -> dict[str, Any]:
    """Median seconds of each command and the ratios to ``import torch``."""
    median = {name: round(statistics.median(values), 3) for name, values in times.items()}
    return {"median_s": median, **{key: round(median[name] / torch_s, 2) for key, name in RATIOS.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of every command (default 5)")
    parser.add_argument("--before", type=Path, help="another checkout to time in the same run (before / after)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    checkouts = {"after": HERE, **({"before": args.before.resolve()} if args.before else {})}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        write_layout(Path(folder) / "isic", "isic2016", n_abnormal=3, size=32)  # a small ISIC 2016 test split
        times = time_commands(args.repeats, Path(folder), checkouts)
    torch_s = statistics.median(times["after"]["import torch"])
    result: dict[str, Any] = {label: summary(values, torch_s) for label, values in times.items()}
    result.update(
        cpus=os.cpu_count(), load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()], repeats=args.repeats,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for label in checkouts:
        print(f"[{label}: {checkouts[label]}]" if args.before else "")
        for name, value in result[label]["median_s"].items():
            print(f"{name:<50} {value:7.2f} s")
        for key in RATIOS:
            print(f"{key}: {result[label][key]}")
    print(f"{result['cpus']} CPUs; load average {result['load_before']} before, {result['load_after']} after")


if __name__ == "__main__":
    main()
