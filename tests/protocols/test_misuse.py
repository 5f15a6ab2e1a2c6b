"""The protocol / command-line misuse cases of the robustness sweep (tests/robustness/cases_protocols.py): each
ends with exit 2 and one ``error:`` line naming the key or file, before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest

harness = pytest.importorskip("tests.robustness.harness")
from tests.robustness.cases_protocols import CASES  # noqa: E402

FAST = [c for c in CASES if c.fast]


@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_protocol_misuse_ends_in_one_clear_error(case: object, tmp_path: Path) -> None:
    setup, outcome = harness.run_case(case, tmp_path)
    verdict = harness.judge(case, setup, outcome)
    assert verdict.clean, f"{verdict.why}\nstderr: {outcome.stderr}"
