"""Shipped protocols outside a checkout: by name (`medad run demo`), listed by `medad protocols`, run into the
current folder, and found by a non-editable install through importlib.resources (issue 23 §2)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medad.errors import ConfigError
from medad.protocols.bundled import locate_protocol
from medad.protocols.loading import load_protocol
from medad.protocols.resolve import resolve_protocol
from tests.cli import run_medad
from tests.timeouts import HANG_S

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (ROOT / "protocols").glob("*.yaml"))


def test_a_shipped_protocol_by_name_runs_into_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lp = load_protocol("demo")
    assert lp.path.resolve() == (ROOT / "protocols" / "demo.yaml").resolve()
    assert resolve_protocol(lp).output == str(tmp_path / "runs")  # `output: ../runs`, as from a checkout's root
    assert load_protocol("demo.yaml").path == lp.path


def test_a_checkout_path_outside_the_checkout_says_where_the_shipped_protocols_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"protocols/demo.yaml does not exist here; .*`medad run demo` .*shipped"):
        locate_protocol("protocols/demo.yaml")
    with pytest.raises(ConfigError, match=r"nope does not exist; .*shipped protocol \(compare-baselines, "):
        locate_protocol("nope")
    (tmp_path / "demo").mkdir()  # a folder of that name is not a protocol file: the shipped one is meant
    assert locate_protocol("demo")[1]


def test_protocols_command_lists_every_shipped_protocol(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_medad(monkeypatch, capsys, "protocols")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[:-1]] == SHIPPED
    assert "Synthetic demo" in out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build medad")
def test_installed_copy_finds_the_shipped_protocols(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(ROOT)],
        capture_output=True, text=True, cwd=tmp_path, timeout=HANG_S,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    installed = target / "medad" / "protocols" / "shipped"
    shipped = sorted(p.stem for p in installed.glob("*.yaml"))
    assert shipped == SHIPPED and not installed.is_symlink()
    env = {k: v for k, v in os.environ.items() if k != "MEDAD_PROTOCOLS"} | {"PYTHONPATH": str(target)}
    user = tmp_path / "elsewhere"
    user.mkdir()
    code = (
        "import medad; from medad.protocols import load_protocol, resolve_protocol; "
        "from medad.protocols.bundled import bundled_protocol; "
        "print(medad.__file__); print(bundled_protocol('demo')); "
        f"print(resolve_protocol(load_protocol('demo')).output); "
        f"print(resolve_protocol(load_protocol({str(installed / 'demo.yaml')!r})).output)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=user, env=env)
    assert found.returncode == 0, found.stderr
    package, protocol, by_name, by_path = found.stdout.split()
    assert Path(package).resolve().is_relative_to(target.resolve())  # the installed copy, not the checkout
    assert Path(protocol).resolve().is_relative_to(target.resolve())
    assert by_name == by_path == str(user / "runs")  # never inside site-packages
    for args, said in ((["validate", "demo", "--structure-only"], "demo: valid"), (["protocols"], str(installed))):
        cli = subprocess.run(
            [sys.executable, "-m", "medad.cli", *args], capture_output=True, text=True, cwd=user, env=env
        )
        assert cli.returncode == 0 and said in cli.stdout, cli.stderr
