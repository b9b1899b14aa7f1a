"""The package graph: one direction of data flow, no cycles between topslot's packages.

Every import of a ``topslot`` module counts, at module level or inside a function (a lazy import is
still a dependency); only imports under ``if TYPE_CHECKING:`` are left out (they never run).
A package is a first-level name under ``topslot`` (``daemon/store/`` or ``daemon/campaign.py``: the source
folder of the ``topslot`` import package is ``daemon/``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

DAEMON = Path(__file__).resolve().parents[1] / "daemon"


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "topslot" and len(parts) > 1 else None


def _imports(tree: ast.AST, package: str) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in DAEMON.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        module = ".".join(("topslot", *path.relative_to(DAEMON).with_suffix("").parts))
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        unit = unit_of(module)
        if unit is None or unit.startswith("__"):
            continue
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            target = unit_of(imported)
            if target is None or target == unit:
                continue
            if (DAEMON / target).is_dir() or (DAEMON / f"{target}.py").is_file():
                graph[unit].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_scan_sees_the_graph() -> None:
    graph = package_graph()
    assert "store" in graph["dispatch"] and "campaign" in graph["planning"]


def test_no_cycles_between_packages() -> None:
    graph = package_graph()
    found = cycles(graph)
    detail = {tuple(group): {p: sorted(graph[p] & set(group)) for p in group} for group in found}
    assert not found, f"package cycles: {detail}"


def test_the_store_is_persistence_only() -> None:
    graph = package_graph()
    assert not graph["store"] & {"dispatch", "attribution", "scheduling", "runtime", "tracking", "channels", "cli"}
