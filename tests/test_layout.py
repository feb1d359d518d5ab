"""Imports go one way: physics (envs) and storage (datasets) know nothing of learning, and no two
parts of leads import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    """Every module of the installed package ``leads`` -> its file."""
    out = {}
    for top in ("leads", "envs", "datasets"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if top != "leads":
                parts.insert(0, "leads")
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of leads that ``path`` imports anywhere (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("leads"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & known
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("leads")}
    return found & known


def _part(module: str) -> str:
    """``leads.evaluation.scoring`` -> ``evaluation``; ``leads.jobs`` -> ``jobs``."""
    return module.split(".")[1] if "." in module else module


def _graph() -> dict[str, set[str]]:
    """part -> the parts it imports. A module that imports nothing of leads (a leaf, such as
    leads.evaluation.metrics) cannot close a loop, so importing it adds no edge."""
    modules = _modules()
    imports = {m: _imports(p, set(modules)) - {m, "leads"} for m, p in modules.items()}
    leaves = {m for m, deps in imports.items() if not deps}
    graph: dict[str, set[str]] = {}
    for module, deps in imports.items():
        graph.setdefault(_part(module), set()).update(_part(d) for d in deps - leaves)
    for part, deps in graph.items():
        deps.discard(part)
    return graph


def test_physics_and_storage_import_nothing_of_learning():
    graph = _graph()
    assert graph["envs"] == set()
    assert graph["datasets"] <= {"envs"}


def test_evaluation_and_reporting_import_one_way():
    graph = _graph()
    assert "reporting" not in graph["evaluation"]
    assert "evaluation" in graph["reporting"]  # the tables are built from scores, not the other way


def _loop(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to where it started, or None."""
    state: dict[str, int] = {}  # 1: on the current chain, 2: explored

    def visit(node: str, chain: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*chain, dep]
            if dep not in state and (found := visit(dep, [*chain, dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_no_two_parts_of_leads_import_each_other():
    loop = _loop(_graph())
    assert loop is None, "import loop: " + " -> ".join(loop or [])


def test_the_loop_check_finds_loops():
    assert _loop({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _loop({"evaluation": {"reporting"}, "reporting": {"evaluation"}}) is not None
