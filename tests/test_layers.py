"""medad's folders depend on each other one way (docs/architecture.md): each package imports only the packages
below it, counting imports inside functions too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports import imported_modules

MEDAD = Path(__file__).resolve().parents[1] / "medad"

# package -> the medad packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "utils": {"errors"},
    "data": {"errors", "utils"},
    "metrics": {"errors"},
    "dicomweb": {"errors", "utils"},
    "dimse": {"errors", "utils", "dicomweb"},
    "models": {"errors", "utils", "data"},
    "stats": {"errors", "metrics"},
    "engine": {"errors", "utils", "data", "models", "dicomweb", "dimse"},
    "evaluation": {"errors", "utils", "data", "engine", "metrics", "stats"},
    "export": {"errors", "utils", "data", "engine"},
    "deploy": {"errors", "utils", "models", "engine"},
    "reports": {"errors", "utils", "engine", "evaluation", "metrics", "stats"},
    "watch": {"errors", "utils", "data", "models", "dicomweb", "dimse", "engine", "export"},
}


def package_imports(root: Path = MEDAD) -> dict[str, set[str]]:
    """Package -> the other medad packages its modules import (module level and inside functions)."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("").parts
        package = rel[0]
        targets = found.setdefault(package, set())
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "medad" and len(parts) > 1 and parts[1] != package:
                targets.add(parts[1])
    return found


def test_packages_import_only_the_layers_below_them() -> None:
    imports = package_imports()
    wrong = {p: sorted(imports.get(p, set()) - allowed) for p, allowed in ALLOWED.items()}
    assert not {p: w for p, w in wrong.items() if w}, wrong


@pytest.mark.parametrize("package", ["protocols", "cli"])
def test_only_the_composing_layers_import_the_protocols_and_cli(package: str) -> None:
    importers = {p for p, targets in package_imports().items() if package in targets}
    assert importers <= {"protocols", "cli", "__init__"}, importers


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "x.py").write_text("def f():\n    from medad.export.png import write_png\n")
    assert package_imports(tmp_path) == {"utils": {"export"}}
