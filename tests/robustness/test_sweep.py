"""The robustness sweep as a test: the quick subset runs here; ``python -m tests.robustness.sweep`` runs all."""

from __future__ import annotations

from tests.robustness.harness import summary, sweep
from tests.robustness.sweep import all_cases


def test_case_names_are_unique_and_enough():
    names = [c.name for c in all_cases()]
    assert len(names) == len(set(names))
    assert len(names) >= 60


def test_fast_subset_is_clean(tmp_path):
    verdicts = sweep([c for c in all_cases() if c.fast], tmp_path)
    assert all(v.clean for v in verdicts), summary(verdicts)
