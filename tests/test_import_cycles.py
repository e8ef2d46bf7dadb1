"""No import cycles inside ``ctcvr_model`` and ``data_prep`` (function-level imports included).

Imports are read with ``ast`` from the source files, so the check costs no torch import and sees
the lazy imports inside functions too (a lazy import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast

from tests.fixtures import REPO as ROOT
from tests.fixtures import find_cycle
from tests.fixtures import import_graph as package_import_graph

PACKAGES = ("ctcvr_model", "data_prep", "relate_common")  # relate_common: a cycle could pass through it


def import_graph() -> dict[str, set[str]]:
    return package_import_graph(PACKAGES)


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

