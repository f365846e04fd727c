"""The package's shape (docs/architecture.md): its import graph, read from every ``import`` statement in the
source (those inside functions too), has no circle, and no arrow points up the floors."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "physiowave"

# floor of each module, by longest matching name prefix; a module may import its own floor or lower ones
FLOORS = {
    # 0: the ground: version and lazy public names, the HDF5 contract, file helpers, figures, device choice
    "physiowave": 0, "physiowave.contract": 0, "physiowave.fileio": 0, "physiowave.figures": 0,
    "physiowave.device": 0, "physiowave.flags": 0, "physiowave.threads": 0,
    # 1: pure parts: the network, signal preprocessing, datasets
    "physiowave.models": 1, "physiowave.preprocess": 1, "physiowave.data": 1,
    # 2: models to and from files
    "physiowave.checkpoint": 2, "physiowave.hub": 2, "physiowave.loading": 2, "physiowave.export": 2,
    # 3: running models: inference and the training engine
    "physiowave.inference": 3, "physiowave.engine": 3,
    # 4: what users call: the command, the benchmark runner
    "physiowave.cli": 4, "physiowave.benchmark": 4, "physiowave.__main__": 4,
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(names: dict[str, Path]) -> dict[str, set[str]]:
    """module → the package modules it imports (``from . import x`` counts as importing ``x``)."""
    def known(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names)
        graph[name] = {t for t in map(known, targets) if t and t.startswith("physiowave") and t != name}
    return graph


def floor_of(name: str) -> int:
    """The floor of the longest entry of FLOORS that is ``name`` or a package holding it (the root only by name)."""
    prefix = max((p for p in FLOORS if name == p or (p != "physiowave" and name.startswith(p + "."))), key=len)
    return FLOORS[prefix]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_names())


def test_the_graph_is_read_from_the_sources(graph) -> None:
    assert "physiowave.inference" in graph["physiowave.cli.predict"]
    assert "physiowave.models.physiowave" in graph["physiowave.models"]  # `from .physiowave import ...`
    assert "physiowave.hub" in graph["physiowave.loading"]  # `from . import hub`


def test_every_module_has_a_floor(graph) -> None:
    for name in graph:
        floor_of(name)  # raises ValueError (max of nothing) for a module outside FLOORS


def test_no_import_circle(graph) -> None:
    assert circles(graph) == []


def test_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_arrow_points_up_the_floors(graph) -> None:
    up = [f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})"
          for a, targets in sorted(graph.items()) for b in sorted(targets) if floor_of(b) > floor_of(a)]
    assert up == []


def test_the_package_root_imports_nothing_when_loaded() -> None:
    """The root names the public API lazily, so ``physiowave.preprocess`` (and its workers) never load torch."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert not [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level]
