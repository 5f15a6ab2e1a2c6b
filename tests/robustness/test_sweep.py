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


def test_verdict_categories_and_counts():
    """Each unclean end gets one category, and the summary counts them (what the sweep script prints)."""
    from tests.robustness.harness import Case, Expect, Outcome, Setup, counts, judge

    def case(expect: Expect) -> Case:
        return Case("c", lambda _: Setup([]), expect)

    named = Setup([], names="bad.png")
    late = Setup([], names="bad.png", check=lambda _: "late: scored before the refusal")
    verdicts = [
        judge(case(Expect.ERROR), named, Outcome(2, "", "error: bad.png is broken; remove it\n")),
        judge(case(Expect.ERROR), named, Outcome(1, "", "Traceback (most recent call last):\nValueError: x\n")),
        judge(case(Expect.ERROR), named, Outcome(0, "done\n", "")),
        judge(case(Expect.WARNING), named, Outcome(0, "done\n", "")),
        judge(case(Expect.ERROR), late, Outcome(2, "", "error: bad.png is broken; remove it\n")),
        judge(case(Expect.ERROR), named, Outcome(2, "", "error: something else\n")),
        judge(case(Expect.ERROR), None, Outcome(-1, "", "make failed")),
    ]
    assert [v.category for v in verdicts] == ["clean", "traceback", "silent", "silent", "late", "wrong", "broken"]
    assert counts(verdicts) == {"clean": 1, "traceback": 1, "silent": 2, "late": 1, "wrong": 1, "broken": 1}
    assert "clean 1 / traceback 1 / silent 2 / late 1 / wrong 1 / broken 1" in summary(verdicts)


def test_round2_cases_are_registered():
    """The round-2 module (issue 22 §7) is part of the sweep, with at least 40 cases of its own."""
    names = [c.name for c in all_cases() if c.name.startswith("r2-")]
    assert len(names) >= 40


def test_round3_cases_are_registered():
    """The round-3 module (issue 26: series export, DIMSE, watch) is part of the sweep, its peers among the fast."""
    cases = [c for c in all_cases() if c.name.startswith("r3-")]
    assert len(cases) >= 10 and sum(c.fast for c in cases) >= 6
