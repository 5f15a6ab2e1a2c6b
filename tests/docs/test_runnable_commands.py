"""Every command that README.md and docs/*.md mark runnable is executed here, so the docs cannot drift.

Convention: a fenced code block whose info string is ``bash runnable`` (GitHub still highlights it as bash)::

    ```bash runnable
    medad datasets synth data/isic --layout isic2016 --n-abnormal 6
    medad datasets check data/isic --kind auto      # comments are fine
    ```

Each block runs in its own fresh temporary folder holding a copy of ``protocols/`` (so commands written for the
repository root work), one command after the other, with this venv's ``medad`` first on ``PATH``, offline
(``HF_HUB_OFFLINE=1``) and a private ``MEDAD_CACHE``. Every command must exit 0. Lines ending in ``\\`` continue
on the next line. Only mark commands that run on synthetic data in seconds; leave real-data and weights commands
in plain ``bash`` blocks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timeouts import HANG_S

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```bash runnable[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
TIMEOUT_S = HANG_S


def commands_of(block: str) -> list[str]:
    """The commands of one block: continuation lines joined, blank and comment-only lines dropped."""
    commands, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def runnable_blocks() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for n, match in enumerate(FENCE.finditer(text), start=1):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{path.relative_to(ROOT)}:{line}#{n}", commands_of(match.group(1))))
    return found


BLOCKS = runnable_blocks()


def test_marker_convention_is_used() -> None:
    files = {block_id.split(":")[0] for block_id, _ in BLOCKS}
    assert "README.md" in files, "README.md's usage block must be marked `bash runnable`"
    assert all(commands for _, commands in BLOCKS), "a `bash runnable` block without commands"


def test_commands_of_joins_continuations_and_drops_comments() -> None:
    block = "# setup\nmedad a \\\n  --x 1   # note\n\nmedad b\n"
    assert commands_of(block) == ["medad a    --x 1   # note", "medad b"]


@pytest.mark.slow
@pytest.mark.parametrize(("block_id", "commands"), BLOCKS, ids=[b for b, _ in BLOCKS])
def test_runnable_block(block_id: str, commands: list[str], tmp_path: Path) -> None:
    medad = shutil.which("medad", path=str(Path(sys.executable).parent))
    assert medad, f"no medad console script beside {sys.executable}; pip install -e . first"
    shutil.copytree(ROOT / "protocols", tmp_path / "protocols")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "MEDAD_CACHE": str(tmp_path / ".cache"),
        "MPLBACKEND": "Agg",
        "NO_COLOR": "1",
    }
    for command in commands:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, (
            f"{block_id}: `{command}` exited {done.returncode}\nstdout:\n{done.stdout[-2000:]}\n"
            f"stderr:\n{done.stderr[-2000:]}"
        )
