"""The `[dev]` extra installs every tool the tests and docs tell a developer to run (issue 23 §5: `jupyter
nbconvert --clear-output`, named by the notebook test, was not installed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dev_extra_installs_the_tools_developers_are_told_to_run() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    dev = {re.split(r"[<>=\[ ;]", spec)[0].lower() for spec in extras["dev"]}
    assert {"pytest", "ruff", "mypy", "nbmake", "nbconvert"} <= dev
    told = (ROOT / "tests" / "notebooks" / "test_notebooks.py").read_text(encoding="utf-8")
    assert "jupyter nbconvert" not in told or "nbconvert" in dev
