"""Notebooks find the shipped protocols without guessing paths (``medad.protocols.bundled``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medad.errors import ConfigError
from medad.protocols import bundled

ROOT = Path(__file__).resolve().parents[2]


def test_checkout_and_environment_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(bundled.ENV_VAR, raising=False)
    assert bundled.bundled_protocol("demo").resolve() == ROOT / "protocols" / "demo.yaml"
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    shutil.copy(ROOT / "protocols" / "demo.yaml", copy / "demo.yaml")
    monkeypatch.setenv(bundled.ENV_VAR, str(copy))
    assert bundled.bundled_protocol("demo.yaml") == copy / "demo.yaml"
    with pytest.raises(ConfigError, match=r"no shipped protocol named 'nope'; shipped protocols: demo"):
        bundled.bundled_protocol("nope")


def test_not_found_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(bundled.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(bundled, "_candidates", lambda: [tmp_path])
    with pytest.raises(ConfigError, match=r"set MEDAD_PROTOCOLS=/path/to/medad/protocols"):
        bundled.bundled_protocols_dir()
