"""The import graph of a package, read from its source with :mod:`ast` (nothing is imported).

Every ``import`` / ``from … import`` statement counts, wherever it stands: at module level,
inside a function or method (a deferred import still couples the two modules), and under
``if TYPE_CHECKING:`` (a type-only import is a dependency of the module's interface).
Relative imports are resolved against the importing module. ``importlib.import_module("x")``
with a literal name counts as an import of ``x``.

An import resolves to the deepest module of the tree it names: ``from loom.nn import layers``
is an edge to ``loom.nn.layers`` (a submodule), ``from loom.nn import Network`` an edge to
``loom.nn`` (the package's ``__init__``). The parent packages Python initialises on the way
are not edges: every module would otherwise depend on its package, and every package that
re-exports its modules would close a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Import", "ImportGraph", "find_cycles", "read_package"]


@dataclass(frozen=True)
class Import:
    """One import statement: ``importer`` names ``target`` at ``path:line``."""

    importer: str
    target: str
    path: Path
    line: int
    deferred: bool  # inside a function (or method)
    type_only: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class ImportGraph:
    """Modules of a package tree and the imports between them (and to outside modules)."""

    modules: dict[str, Path]
    imports: list[Import]

    def internal_edges(self) -> dict[str, set[str]]:
        """``importer -> {imported module of the tree}`` (self-imports dropped)."""
        edges: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.target in self.modules and imp.target != imp.importer:
                edges[imp.importer].add(imp.target)
        return edges


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


class _Collector(ast.NodeVisitor):
    def __init__(self, importer: str, is_package: bool, path: Path, modules: dict[str, Path]) -> None:
        self.importer, self.is_package, self.path, self.modules = importer, is_package, path, modules
        self.found: list[Import] = []
        self._depth = 0  # function nesting
        self._type_checking = 0  # ``if TYPE_CHECKING:`` nesting

    def _add(self, target: str, node: ast.AST) -> None:
        imp = Import(self.importer, target, self.path, node.lineno, self._depth > 0, self._type_checking > 0)
        self.found.append(imp)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def _visit_function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = _resolve_relative(self.importer, self.is_package, node.level, node.module)
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else base, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._add(first.value, node)
        self.generic_visit(node)


def read_package(root: Path, package: str | None = None) -> ImportGraph:
    """Parse every ``.py`` file below the package folder ``root`` (named ``package``, default its folder name)."""
    root = Path(root)
    package = package or root.name
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {_module_name(root, path, package): path for path in files}
    imports: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _Collector(name, path.name == "__init__.py", path, modules)
        collector.visit(tree)
        imports.extend(collector.found)
    return ImportGraph(modules, imports)


def _strongly_connected(edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's algorithm, iterative; yields every component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def _shortest_cycle(component: Iterable[str], edges: dict[str, set[str]]) -> list[str]:
    """One shortest cycle through the first module of a strongly connected component (for messages)."""
    members = set(component)
    start = min(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(edges[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    nxt.append(child)
        frontier = nxt
    return [start]


def find_cycles(graph: ImportGraph) -> list[list[str]]:
    """One cycle (``a -> b -> … -> a``) per strongly connected component of the import graph."""
    edges = graph.internal_edges()
    return [_shortest_cycle(component, edges) for component in _strongly_connected(edges)]
