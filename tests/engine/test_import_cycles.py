"""The engine and evaluation packages import one way: no module reaches itself through its imports.

Every import counts, also those inside functions (a lazy import only hides a cycle from Python, not from a
reader), so the check walks the syntax tree of each module rather than importing it.
"""

from __future__ import annotations

from pathlib import Path

import medad
from tests.imports import imported_modules

ROOT = Path(medad.__file__).parent
PACKAGES = ("engine", "evaluation")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the checked packages it imports (package ``__init__`` files excluded as sources:
    they only re-export)."""
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).glob("*.py")}
    modules = set(files)
    sources = {name: path for name, path in files.items() if not name.endswith(PACKAGES)}
    return {name: (imported_modules(path) & modules) - {name} for name, path in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_engine_and_evaluation_have_no_import_cycle():
    graph = import_graph()
    assert "medad.engine.scorer" in graph and "medad.engine.tiling" in graph["medad.engine.scorer"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])
