"""A non-editable install ships the study YAMLs, so notebooks and scripts find them outside a checkout."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build medad")
def test_installed_copy_finds_the_shipped_protocols(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(ROOT)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    shipped = sorted(p.name for p in (target / "medad" / "protocols" / "shipped").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "protocols").glob("*.yaml"))
    env = {k: v for k, v in os.environ.items() if k != "MEDAD_PROTOCOLS"} | {"PYTHONPATH": str(target)}
    code = "from medad.protocols.bundled import bundled_protocol; print(bundled_protocol('demo'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).resolve().is_relative_to(target.resolve())
