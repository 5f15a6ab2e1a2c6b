"""Run ``medad ...`` in the test process, as a user would from a shell, and collect what it printed."""

from __future__ import annotations

import sys

import pytest


def run_medad(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``medad ARGS`` through the console-script entry point; return (exit code, stdout + stderr)."""
    from medad.cli import main

    monkeypatch.setattr(sys, "argv", ["medad", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err
