"""No import cycles inside ``ctcvr_model`` and ``data_prep`` (function-level imports included).

Imports are read with ``ast`` from the source files, so the check costs no torch import and sees
the lazy imports inside functions too (a lazy import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.fixtures import REPO as ROOT

PACKAGES = ("ctcvr_model", "data_prep", "relate_common")  # relate_common: a cycle could pass through it


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``PACKAGES``."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).glob("*.py")):
            out[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path
    return out


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule when there is one, else pkg itself
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                         for a in node.names)
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; depth-first search with colours."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_reads_lazy_imports():
    graph = import_graph()
    assert "ctcvr_model.device" in graph["ctcvr_model.encoders"]  # imported inside load_encoder
    assert "ctcvr_model.encoders" in graph["ctcvr_model.features"]


def test_no_import_cycle_in_ctcvr_model_and_data_prep():
    assert find_cycle(import_graph()) is None


def test_test_modules_share_code_only_through_the_fixtures_module():
    """A test file imports no other test file: what tests share lives in tests/fixtures.py (and conftest's
    fixtures), and tests/ mirrors the package layout (a test file sits under its package's folder)."""
    tests = ROOT / "tests"
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad = [n for n in names if n.startswith("tests.") and n != "tests.fixtures"]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    top = sorted(p.name for p in tests.glob("test_*.py"))
    assert top == ["test_import_cycles.py", "test_install.py"], f"place these under their package's folder: {top}"

