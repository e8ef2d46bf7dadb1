"""reward_fns' modules import each other without a cycle, and the credit path in the order its data flows.

Read from the source with ``ast`` (every import statement, TYPE_CHECKING blocks and function
bodies included), so a cycle hidden behind a lazy import is caught as well.
"""

from __future__ import annotations

import ast

from tests.fixtures import REPO as REPO_ROOT

PKG = REPO_ROOT / "reward_fns"

# reward_fns.credit's steps (normalise -> eligibility -> n-gram statistics -> spans -> token
# mask), with the modules they stand on: each may import only those before it.
CREDIT_PATH = [
    "types", "config", "text", "prompt_copies", "text_filters", "ngram_stats", "literals", "risk", "attribution", "credit",
]


def reward_fns_imports() -> dict[str, set[str]]:
    """{module: reward_fns modules it imports} for every reward_fns/*.py but the package's __init__."""
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in sorted(modules):
        deps: set[str] = set()
        for node in ast.walk(ast.parse((PKG / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level <= 1:
                # ``from reward_fns import text`` names a module; ``from reward_fns.text import x`` the
                # module (``from . import text`` / ``from .text import x`` read the same)
                pkg = "reward_fns" if node.level else ""
                mod = ".".join(x for x in (pkg, node.module) if x)
                targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
            else:
                continue
            for t in targets:
                parts = t.split(".")
                if parts[0] == "reward_fns" and len(parts) > 1 and parts[1] in modules and parts[1] != name:
                    deps.add(parts[1])
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_among_reward_fns_modules():
    graph = reward_fns_imports()
    assert "credit" in graph and "text" in graph["prompt_copies"]  # the parse sees the modules and their imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_each_credit_step_imports_only_earlier_ones():
    graph = reward_fns_imports()
    for i, m in enumerate(CREDIT_PATH):
        later = set(CREDIT_PATH[i + 1 :]) & graph[m]
        assert not later, f"reward_fns.{m} imports a later step of the credit path: {sorted(later)}"
