"""Every notebook in notebooks/ runs headless on synthetic data, and is committed without outputs.

Each notebook is executed with nbclient in a fresh temporary working folder, on the kernel ``python3`` of the
current interpreter (ipykernel installs that kernelspec into the venv), offline (``HF_HUB_OFFLINE=1``) with a
private ``MEDAD_CACHE``. Parameters can be injected after the cell tagged ``parameters`` (papermill's
convention) to keep CI fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.timeouts import HANG_S

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = HANG_S  # per cell: a hang guard only
# Smaller than the notebooks' defaults only where it saves time without skipping a cell.
CI_PARAMETERS: dict[str, str] = {
    "03_study_results": f"protocol = {str(ROOT / 'protocols' / 'demo.yaml')!r}",
}


def _parameter_cell(notebook: nbformat.NotebookNode) -> int:
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "each notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def test_there_are_notebooks() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"01_quickstart", "02_lesion_heatmaps", "03_study_results"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    _parameter_cell(notebook)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs or execution counts; strip them "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)})"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(path, as_version=4)
    index = _parameter_cell(notebook)
    if path.stem in CI_PARAMETERS:
        injected = nbformat.v4.new_code_cell(CI_PARAMETERS[path.stem])
        injected.metadata["tags"] = ["injected-parameters"]
        notebook.cells.insert(index + 1, injected)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MEDAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel must be this interpreter (the venv under test), whatever kernelspecs the machine has.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
