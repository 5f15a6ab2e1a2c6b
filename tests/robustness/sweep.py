"""Run every robustness case; print ``N tried, N clean`` and the unclean ones: ``python -m tests.robustness.sweep``.

Options: ``-k TEXT`` runs only the cases whose name contains TEXT; ``--fast`` only the quick subset; ``-v`` prints
each case's verdict as it ends. Exit code 0 when every case tried is clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from tests.robustness.harness import Case, summary, sweep

CASE_MODULES = (
    "tests.robustness.cases_core",
    "tests.robustness.cases_protocols",
    "tests.robustness.cases_round2",
    "tests.robustness.cases_round3",
)


def all_cases() -> list[Case]:
    """The cases of every case module present (a module not written yet is left out)."""
    cases: list[Case] = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        cases.extend(module.CASES)
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-k", default="", help="only cases whose name contains this text")
    parser.add_argument("--fast", action="store_true", help="only the quick subset")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each verdict")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    cases = [c for c in all_cases() if args.k in c.name and (c.fast or not args.fast)]
    with tempfile.TemporaryDirectory(prefix="medad-sweep-") as root:
        os.environ.setdefault("MEDAD_CACHE", str(Path(root) / "cache"))
        verdicts = sweep(cases, Path(root), echo=print if args.verbose else None)
    print(summary(verdicts))
    return 0 if all(v.clean for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
