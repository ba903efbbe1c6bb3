"""No circular imports between the modules of one package.

A cycle is found from the source, not by importing: every ``import`` anywhere in a file counts
(function-local and ``TYPE_CHECKING`` ones too, since hiding an import in a function keeps the
dependency and only moves the failure to run time). A cycle means two modules cannot be
understood, tested or changed apart; the fix is a small interface both sides import (a
``Protocol``, a plain state module), which is why this test exists.

How imports become edges:
- ``import a.b.c`` is an edge to ``a.b.c``;
- ``from x import name`` is an edge to ``x.name`` when that is a module, else to ``x``; relative
  imports are resolved against the importing module's package;
- when ``x`` is a package whose ``__init__`` only re-exports ``name`` from one of its submodules
  (``from .sub import name``), the edge goes to that submodule: an ``__init__`` that imports its
  own submodules is not a cycle with them, unless a submodule needs something the ``__init__``
  itself defines.

Only edges inside one package subtree count (``tuidebug.probe.*``, ``tuidebug.console.*``, ...):
those are the modules that are meant to be layered.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tuidebug

ROOT = Path(tuidebug.__file__).parent


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int


def module_files(root: Path) -> dict[str, Path]:
    """Every module under the package at ``root``, by dotted name (``pkg.__init__`` -> ``pkg``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _from_base(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute module ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _reexports(module: str, path: Path, modules: set[str]) -> dict[str, str]:
    """Names a package's ``__init__`` takes, at top level, from its own submodules."""
    if path.name != "__init__.py":
        return {}
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = _from_base(node, module, path)
            if base.startswith(module + ".") and base in modules:
                for alias in node.names:
                    found[alias.asname or alias.name] = base
    return found


def import_edges(files: dict[str, Path]) -> Iterator[Edge]:
    modules = set(files)
    reexports = {m: _reexports(m, p, modules) for m, p in files.items()}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = []
                base = _from_base(node, module, path)
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        targets.append(f"{base}.{alias.name}")
                    else:
                        targets.append(reexports.get(base, {}).get(alias.name, base))
            else:
                continue
            for target in targets:
                if target in modules and target != module:
                    yield Edge(module, target, node.lineno)


def _subtree(module: str, files: dict[str, Path]) -> str:
    """The package subtree a module belongs to: ``tuidebug.probe.gate`` -> ``tuidebug.probe``;
    a module at the top (``tuidebug.cli``) belongs to the top package."""
    top = ".".join(module.split(".")[:2])
    path = files.get(top)
    return top if path is not None and path.name == "__init__.py" else module.split(".")[0]


def cycles(edges: list[Edge]) -> list[tuple[list[Edge], set[str]]]:
    """For every strongly connected group of modules (Tarjan): one cycle through it, as its
    edges, and the whole group."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
        graph.setdefault(edge.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # the graph is a few hundred modules: recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for group in groups:
        start = min(group)
        # Breadth-first from start back to start, inside the group: the shortest cycle through it.
        paths: dict[str, list[Edge]] = {start: []}
        queue = [start]
        cycle: list[Edge] | None = None
        while queue and cycle is None:
            node = queue.pop(0)
            for succ, edge in sorted(graph[node].items()):
                if succ == start:
                    cycle = [*paths[node], edge]
                    break
                if succ in group and succ not in paths:
                    paths[succ] = [*paths[node], edge]
                    queue.append(succ)
        assert cycle is not None
        found.append((cycle, group))
    return sorted(found, key=lambda c: c[0][0].source)


def describe(cycle: list[Edge], group: set[str], files: dict[str, Path], root: Path) -> str:
    steps = " -> ".join(edge.source for edge in cycle) + f" -> {cycle[0].source}"
    where = ", ".join(f"{files[e.source].relative_to(root.parent)}:{e.line}" for e in cycle)
    text = f"{steps}  ({where})"
    if len(group) > len(cycle):
        text += (
            f"; the cycle's group also holds {', '.join(sorted(group - {e.source for e in cycle}))}"
        )
    return text


def intra_package_cycles(root: Path) -> list[str]:
    files = module_files(root)
    edges = [
        e for e in import_edges(files) if _subtree(e.source, files) == _subtree(e.target, files)
    ]
    return [describe(cycle, group, files, root) for cycle, group in cycles(edges)]


def test_no_import_cycles_inside_a_package() -> None:
    found = intra_package_cycles(ROOT)
    assert not found, "import cycles (break each with a small interface):\n" + "\n".join(found)


# --- the scanner itself, on small trees, so a pass above means something ----------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("from pkg.sub import b\n", "from pkg.sub import a\n"),
        ("from . import b\n", "from .a import thing\n"),
        ("import pkg.sub.b\n", "def f():\n    from pkg.sub.a import thing\n"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
            "from .a import A\n",
        ),
    ],
)
def test_a_two_module_cycle_is_named(tmp_path: Path, a: str, b: str) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "sub/__init__.py": "", "sub/a.py": a, "sub/b.py": b})
    (found,) = intra_package_cycles(root)
    assert found.startswith("pkg.sub.a -> pkg.sub.b -> pkg.sub.a")
    assert "pkg/sub/a.py:" in found and "pkg/sub/b.py:" in found


def test_an_init_reexporting_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from .a import A\nfrom pkg.sub.b import B\n",
            "sub/a.py": "X = 1\n",
            "sub/b.py": "from pkg.sub import A\nfrom . import a\n",
            "user.py": "from pkg.sub import A, B\n",
        },
    )
    assert intra_package_cycles(root) == []


def test_a_submodule_using_what_its_init_defines_is_a_cycle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from .a import A\nDEFAULT = 3\n",
            "sub/a.py": "from pkg.sub import DEFAULT\n",
        },
    )
    (found,) = intra_package_cycles(root)
    assert found.startswith("pkg.sub -> pkg.sub.a -> pkg.sub")


def test_edges_between_packages_are_not_layering(tmp_path: Path) -> None:
    # pkg.one.x and pkg.two.y belong to different package subtrees: not this test's concern.
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "one/__init__.py": "",
            "one/x.py": "from pkg.two import y\n",
            "two/__init__.py": "",
            "two/y.py": "from pkg.one import x\n",
        },
    )
    assert intra_package_cycles(root) == []
