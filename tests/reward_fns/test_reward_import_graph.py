"""reward_fns' modules import each other without a cycle, and the credit path in the order its data flows.

Read from the source with ``ast`` (every import statement, TYPE_CHECKING blocks and function
bodies included), so a cycle hidden behind a lazy import is caught as well.
"""

from __future__ import annotations


from tests.fixtures import find_cycle, import_graph

# reward_fns.credit's steps (normalise -> eligibility -> n-gram statistics -> spans -> token
# mask), with the modules they stand on: each may import only those before it.
CREDIT_PATH = [
    "types", "config", "text", "prompt_copies", "text_filters", "ngram_stats", "literals", "risk", "attribution", "credit",
]


def reward_fns_imports() -> dict[str, set[str]]:
    """{module: reward_fns modules it imports} for every reward_fns/*.py but the package's __init__."""
    graph = import_graph(("reward_fns",))
    short = {name: name.partition(".")[2] for name in graph if name != "reward_fns"}
    return {short[name]: {short[d] for d in deps if d in short} for name, deps in graph.items() if name in short}


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
