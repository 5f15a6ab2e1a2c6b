"""The case type of the robustness sweep and the code that runs a case and judges its end.

A :class:`Case` builds its inputs in a fresh folder (``make``), which returns a :class:`Setup`: the ``medad``
arguments to run and what the messages must name. :func:`run_case` runs it (in this process through
``medad.cli.main`` where possible, else as a ``medad`` subprocess) and :func:`judge` checks the end against the
case's :class:`Expect`:

- ``ERROR``: exit 2, exactly one ``error:`` line on stderr, naming ``Setup.names``; no traceback.
- ``WARNING``: exit 0, a ``warning:`` line naming ``Setup.names``; no traceback.
- ``SKIPPED``: exit 2 with ``N of M scored; K skipped``, the bad file named on stderr, the rest scored.
- ``PROBLEM``: exit 2 and stdout names ``Setup.names`` (``medad datasets check`` listing a problem); no traceback.
- ``OK``: exit 0, no traceback (a harmless oddity such as ``.DS_Store`` is ignored).

An unclean verdict has a category (:data:`CATEGORIES`): ``traceback`` (an exception escaped), ``silent`` (exit 0
where a refusal, skip or warning was due), ``late`` (refused, but only after work that the refusal should have
spared: a check's message starting ``late:``), ``wrong`` (another exit code, or a message that does not name the
file or key) and ``broken`` (the case's own ``make`` failed).

Modules add cases by exposing ``CASES: list[Case]`` (``cases_core.py``, ``cases_protocols.py``,
``cases_round2.py``).
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class Expect(enum.Enum):
    """How a case must end."""

    ERROR = "error"
    WARNING = "warning"
    SKIPPED = "skipped"
    PROBLEM = "problem"
    OK = "ok"


@dataclass
class Setup:
    """What a case's ``make`` returns: the command and what its messages must contain.

    Attributes:
        argv: arguments after ``medad`` (e.g. ``["score", str(folder), "--out", str(out), ...]``).
        names: text the ``error:`` / ``warning:`` line (``SKIPPED``: stderr) must contain: the file or key.
        env: extra environment variables for the run (forces a subprocess when given).
        preexec: run in the child before ``medad`` starts (e.g. ``resource.setrlimit``); forces a subprocess.
        check: called after the run with its stderr; returns a problem (str) or ``None`` (e.g. "the rest was
            scored", "a rerun after the fix gives identical metrics").
        subprocess: run as a ``medad`` subprocess even without env/preexec.
        environ: environment variables set in this process for an in-process run (``None`` unsets one) and
            restored after it; unlike ``env`` it does not force a subprocess.
        cleanup: called after the run whatever its end (e.g. stop a fake server the case started).
    """

    argv: list[str]
    names: str = ""
    env: dict[str, str] = field(default_factory=dict)
    preexec: Callable[[], None] | None = None
    check: Callable[[str], str | None] | None = None
    subprocess: bool = False
    environ: dict[str, str | None] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Case:
    """One bad input or fault.

    Attributes:
        name: short unique id, e.g. ``"s1-truncated-png"`` (the issue section first where it has one).
        make: builds the inputs under the given empty folder and returns the :class:`Setup`.
        expect: how it must end.
        fast: part of the quick subset the pytest test runs (the script runs every case).
        note: what the case stands for (shown for unclean cases).
    """

    name: str
    make: Callable[[Path], Setup]
    expect: Expect
    fast: bool = False
    note: str = ""


@dataclass
class Outcome:
    """The end of one run: exit code, stdout and stderr."""

    code: int
    stdout: str
    stderr: str


CATEGORIES = ("clean", "traceback", "silent", "late", "wrong", "broken")
"""How a case ended, for the sweep's counts (see the module docstring)."""


@dataclass
class Verdict:
    """A judged case: clean or not, why not, and the category of its end (:data:`CATEGORIES`)."""

    case: Case
    clean: bool
    why: str = ""
    category: str = "clean"


def _run_in_process(argv: Sequence[str]) -> Outcome:
    from medad.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["medad", *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # an escaped exception is a traceback: record it as one
                import traceback

                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = old_argv
    return Outcome(code, out.getvalue(), err.getvalue())


def _run_subprocess(setup: Setup, timeout: float) -> Outcome:
    env = {**os.environ, **setup.env}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-c", "from medad.cli import main; main()", *setup.argv]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, preexec_fn=setup.preexec, errors="replace"
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(124, str(exc.stdout or ""), f"timed out after {timeout} s\n{exc.stderr or ''}")
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def run_case(case: Case, folder: Path, *, timeout: float = 300.0) -> tuple[Setup | None, Outcome]:
    """Build the case's inputs in ``folder`` and run its command; a ``make`` that fails is an outcome too."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        setup = case.make(folder)
    except Exception as exc:  # the case itself is broken: report it, do not stop the sweep
        return None, Outcome(-1, "", f"make failed: {type(exc).__name__}: {exc}")
    try:
        if setup.env or setup.preexec or setup.subprocess:
            return setup, _run_subprocess(setup, timeout)
        with _environ(setup.environ):
            return setup, _run_in_process(setup.argv)
    finally:
        if setup.cleanup is not None:
            setup.cleanup()


@contextlib.contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, unset) environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _why_error(setup: Setup, outcome: Outcome, errors: list[str], warnings: list[str]) -> str:
    if outcome.code != 2:
        return f"exit {outcome.code}, wanted 2"
    if len(errors) != 1:
        return f"{len(errors)} error: lines, wanted 1"
    if setup.names not in errors[0]:
        return f"error line does not name {setup.names!r}: {errors[0]}"
    return ""


def _why_warning(setup: Setup, outcome: Outcome, errors: list[str], warnings: list[str]) -> str:
    if outcome.code != 0:
        return f"exit {outcome.code}, wanted 0: {errors[:1]}"
    if not any(setup.names in w for w in warnings):
        return f"no warning: line names {setup.names!r}"
    return ""


def _why_skipped(setup: Setup, outcome: Outcome, errors: list[str], warnings: list[str]) -> str:
    if outcome.code != 2:
        return f"exit {outcome.code}, wanted 2"
    if not errors or "skipped" not in errors[-1] or " of " not in errors[-1]:
        return f"no 'N of M scored; K skipped' line: {errors[-1:]}"
    if setup.names not in outcome.stderr:
        return f"stderr does not name {setup.names!r}"
    return ""


def _why_problem(setup: Setup, outcome: Outcome, errors: list[str], warnings: list[str]) -> str:
    if outcome.code != 2:
        return f"exit {outcome.code}, wanted 2"
    if not any(setup.names in line for line in outcome.stdout.splitlines()[1:]):
        return f"the check's report does not name {setup.names!r}"
    return ""


def _why_success(setup: Setup, outcome: Outcome, errors: list[str], warnings: list[str]) -> str:
    if outcome.code != 0:
        return f"exit {outcome.code}, wanted 0: {(errors or outcome.stderr.strip().splitlines() or [''])[-1]}"
    return ""


_WHY = {
    Expect.ERROR: _why_error,
    Expect.WARNING: _why_warning,
    Expect.SKIPPED: _why_skipped,
    Expect.PROBLEM: _why_problem,
}


def _category(case: Case, outcome: Outcome, why: str, from_check: bool) -> str:
    """The category of an unclean end (see :data:`CATEGORIES`)."""
    if from_check:
        if why.startswith("late:") or "before the refusal" in why:
            return "late"
        return "silent" if why.startswith("silent:") else "wrong"
    if outcome.code == 0 and case.expect is not Expect.OK:
        return "silent"  # a refusal, skip, problem or warning was due and none came
    return "wrong"


def judge(case: Case, setup: Setup | None, outcome: Outcome) -> Verdict:
    """Whether the outcome is the end the case expects."""
    if setup is None:
        return Verdict(case, False, outcome.stderr, "broken")
    err = outcome.stderr
    if "Traceback (most recent call last)" in err or "Traceback" in outcome.stdout:
        return Verdict(case, False, f"traceback (exit {outcome.code}): {err.strip().splitlines()[-1:]}", "traceback")
    errors, warnings = _lines(err, "error:"), _lines(err, "warning:")
    why = _WHY.get(case.expect, _why_success)(setup, outcome, errors, warnings)
    from_check = False
    if not why and setup.check is not None:
        why, from_check = setup.check(err) or "", True
    return Verdict(case, not why, why, _category(case, outcome, why, from_check) if why else "clean")


def sweep(cases: Sequence[Case], root: Path, *, echo: Callable[[str], None] | None = None) -> list[Verdict]:
    """Run and judge every case, each in its own sub-folder of ``root``."""
    names = [c.name for c in cases]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"duplicate case names: {duplicated}")
    verdicts = []
    for k, case in enumerate(cases):
        setup, outcome = run_case(case, root / f"{k:03d}")
        verdict = judge(case, setup, outcome)
        if echo is not None:
            status = "clean  " if verdict.clean else "UNCLEAN"
            echo(f"{status} {case.name}{'' if verdict.clean else ': ' + verdict.why}")
        verdicts.append(verdict)
    return verdicts


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts fell in each category, in the order of :data:`CATEGORIES`."""
    return {name: sum(v.category == name for v in verdicts) for name in CATEGORIES}


def summary(verdicts: Sequence[Verdict]) -> str:
    """``N tried, N clean``, the counts per category, and the unclean ones, one per line."""
    clean = sum(v.clean for v in verdicts)
    lines = [f"{len(verdicts)} tried, {clean} clean"]
    lines.append(" / ".join(f"{name} {n}" for name, n in counts(verdicts).items()))
    lines += [
        f"  unclean [{v.category}]: {v.case.name} ({v.case.expect.value}): {v.why}" for v in verdicts if not v.clean
    ]
    return "\n".join(lines)
