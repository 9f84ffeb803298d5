"""The package's data flow points one way: space -> spec -> model -> {ops, latency, accuracy} -> search -> results ->
report, with the CLI on top. Every import (module level or inside a function) is walked."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labnas"

#: A component may import only components of a lower rank (never one of its own rank or above).
RANKS = {
    "_cache": 0, "_errors": 0, "_tools": 0, "nn": 1, "models": 2,
    "ops": 3, "data": 3, "tvm": 3, "run": 3, "_convert": 3,
    "train": 4, "timing": 4, "simulation": 4,
    "accuracy": 5,
    "space": 6,
    "latency": 7, "results": 7,  # results: the reader of result files (search returns it; report, deploy read them)
    "search": 8,
    "report": 9, "deploy": 9,
    "cli": 10,
}


def module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _component(module: str) -> str:
    return module.split(".")[1] if "." in module else "labnas"


def test_no_import_cycle():
    graph = module_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module)


def test_imports_only_point_down():
    graph = module_graph()
    assert set(RANKS) | {"labnas", "search_spaces"} >= {_component(m) for m in graph}, "a new component needs a rank"
    upward = []
    for module, deps in graph.items():
        a = _component(module)
        for dep in deps:
            b = _component(dep)
            if a == b or "labnas" in (a, b):  # inside one component; the package root only re-exports lazily
                continue
            if RANKS[a] <= RANKS[b]:
                upward.append(f"{module} -> {dep}")
    assert upward == []


def test_the_walk_sees_imports_inside_functions():
    graph = module_graph()
    # report._deploy_shape imports the space model inside the function
    assert "labnas.space" in graph["labnas.report.report"]
    assert "labnas.latency" not in {_component(d) for d in graph["labnas.space"]}
