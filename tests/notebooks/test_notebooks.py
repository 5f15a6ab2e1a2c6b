"""Every notebook in notebooks/ runs headless on synthetic data, and is committed without outputs.

Each notebook is executed with nbclient in a fresh temporary working folder, on the kernel ``python3`` of the
current interpreter (ipykernel installs that kernelspec into the venv), offline (``HF_HUB_OFFLINE=1``) with a
private ``MEDAD_CACHE``. Parameters can be injected after the cell tagged ``parameters`` (papermill's
convention) to keep CI fast.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timeouts import HANG_S

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = HANG_S  # per cell: a hang guard only
OUTPUTS = "medad_outputs"  # the one folder (beside the notebook) every notebook writes into; ignored by git
# Smaller than the notebooks' defaults only where it saves time without skipping a cell.
CI_PARAMETERS: dict[str, str] = {
    "03_study_results": f"protocol = {str(ROOT / 'protocols' / 'demo.yaml')!r}",
}


def _parameter_cell(notebook: nbformat.NotebookNode) -> int:
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "each notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def _code(notebook: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _text(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


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
    # Everything the notebook wrote is under the one documented (git-ignored) folder, nothing else beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == [OUTPUTS]
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "RANDOM" in printed  # the tiny model's random weights are named where the figures are made


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_contours_use_the_shared_colours(path: Path) -> None:
    """Cyan is the prediction and magenta the truth everywhere (medad.utils.colors); no notebook picks its own."""
    code = "\n".join(_code(nbformat.read(path, as_version=4)))
    assert not re.search(r"[\"'](cyan|magenta|#00ffff|#ff00ff)[\"']", code, re.IGNORECASE)
    for call in re.findall(r"\.contour\(([^)]*)\)", code):
        assert "colors=PRED_CONTOUR" in call or "colors=GT_CONTOUR" in call, call
    assert "GT_CONTOUR" in code or ".contour(" not in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_figure_carries_the_weights_note(path: Path) -> None:
    """A figure made with random weights or untrained adapters says so in its title (issue 23 §1, §5)."""
    for source in _code(nbformat.read(path, as_version=4)):
        if re.search(r"plt\.(subplots|figure)\(|histogram_figure\(", source):
            assert re.search(r"weights_note|banner\(fig\)", source), source[:200]


def test_notebook_words_match_the_library() -> None:
    """01 calls untrained adapters untrained (not "real results"); 02 says the report ranks cases by Dice, as
    medad.reports.cases.select_cases does; 03 draws the histogram with the report's own function, per dataset."""
    quick, heatmaps, study = (nbformat.read(ROOT / "notebooks" / f"{n}.ipynb", as_version=4) for n in (
        "01_quickstart", "02_lesion_heatmaps", "03_study_results"))  # fmt: skip
    assert "real results" not in _text(quick) and "untrained" in _text(quick).lower()
    assert "rank by image score" not in _text(heatmaps) and "by Dice" in _text(heatmaps)
    study_code = "\n".join(_code(study))
    assert "histogram_figure(" in study_code and 'groupby("dataset")' in study_code
    assert "label {label}" not in study_code


def test_the_notebooks_output_folder_is_ignored_by_git() -> None:
    """Running a notebook in place writes ``notebooks/medad_outputs/``; git must not offer it for a commit."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = f"notebooks/{OUTPUTS}/quickstart/predictions/meta.json"
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT, check=False)
    assert done.returncode == 0, f"{probe} is not ignored; add {OUTPUTS}/ to .gitignore"
