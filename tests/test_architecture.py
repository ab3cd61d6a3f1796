"""The shape of ``src/streaq``: no import cycles; the UI and ``contrib`` use only the public API.

The import graph is read from the source with :mod:`ast`, never by importing it: every ``import``
and ``from ... import`` counts, at module level or inside a function (a function-level import
hides a cycle, it does not remove it), except those under ``if TYPE_CHECKING:``, which never run.
``from package import name`` is an edge to ``package.name`` when that is a module, else to
``package``. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit
edges are left out, as import linters do, or every package that re-exports its submodules would
be a cycle.

A cycle is a strongly connected component of more than one module (or a module importing itself),
found with Tarjan's algorithm.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
#: the modules the spec makes public, below the package (``cli`` is a command line, not an API)
PUBLIC = ("task", "worker", "types", "utils")
#: subpackages that may use only the package, :data:`PUBLIC` and their own modules
OUTSIDERS = ("ui", "contrib")


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target inside the package, and what it takes from it."""

    target: str
    names: tuple[str, ...]
    line: int


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in ``tree`` except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(name: str, path: Path, known: Mapping[str, Path]) -> list[Import]:
    """The imports of module ``name`` (at ``path``) that land in a module of ``known``."""
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def within(dotted: str) -> str | None:
        # the longest prefix that is one of ours: ``import streaq.task`` -> ``streaq.task``
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in _statements(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := within(alias.name)) is not None:
                    found.append(Import(target, (), node.lineno))
            continue
        if node.level:
            anchor = name if is_package else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{node.module}" if node.module else anchor
        else:
            base = node.module or ""
        from_base: list[str] = []
        for alias in node.names:
            if f"{base}.{alias.name}" in known:
                found.append(Import(f"{base}.{alias.name}", (), node.lineno))
            else:
                from_base.append(alias.name)
        if from_base and (target := within(base)) is not None:
            found.append(Import(target, tuple(from_base), node.lineno))
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (see the module docstring)."""
    known = modules(root, package)
    return {
        name: {found.target for found in imports(name, path, known)} for name, path in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` that are cycles, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _private_attributes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``thing._name`` accesses, except on ``self``/``cls`` (an object's own state)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.endswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            yield node.lineno, ast.unparse(node)


def outsider_violations(root: Path, package: str = "streaq") -> list[str]:
    """Where ``streaq.ui`` or ``streaq.contrib`` reach past the public API."""
    known = modules(root, package)
    public = {package, *(f"{package}.{name}" for name in PUBLIC)}
    problems: list[str] = []
    for name, path in known.items():
        homes = [f"{package}.{outsider}" for outsider in OUTSIDERS]
        home = next((h for h in homes if name == h or name.startswith(h + ".")), None)
        if home is None:
            continue
        where = path.relative_to(root)
        for found in imports(name, path, known):
            own = found.target == home or found.target.startswith(home + ".")
            if not own and found.target not in public:
                problems.append(f"{where}:{found.line}: imports private {found.target}")
            for imported in found.names:
                if imported.startswith("_") and not imported.endswith("__"):
                    problems.append(f"{where}:{found.line}: imports {found.target}.{imported}")
        tree = ast.parse(path.read_text(), str(path))
        problems += [f"{where}:{line}: uses {text}" for line, text in _private_attributes(tree)]
    return problems


def test_streaq_has_no_import_cycles() -> None:
    found = cycles(import_graph(SRC, "streaq"))
    assert not found, "import cycles in src/streaq:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_ui_and_contrib_use_only_the_public_api() -> None:
    problems = outsider_violations(SRC)
    assert not problems, "\n".join(problems)


def _write(root: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            # a function-level import closes the cycle a -> b -> c -> a
            "pkg/a.py": "from . import b\nA = 1\n",
            "pkg/b.py": "def f():\n    import pkg.sub.c\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from ..a import A\n",
            # imports under TYPE_CHECKING never run: no cycle d <-> e
            "pkg/d.py": "import typing\nif typing.TYPE_CHECKING:\n    from .e import E\n",
            "pkg/e.py": "from .d import *\nE = 1\n",
            # a module importing itself is a cycle of one
            "pkg/f.py": "from pkg import f\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.f"]]


def test_an_acyclic_graph_passes() -> None:
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("from .._codec import decode\n", "imports private pkg._codec"),
        ("from ..worker import _UNSET\n", "imports pkg.worker._UNSET"),
        ("def f(worker):\n    return worker._client\n", "uses worker._client"),
    ],
)
def test_a_private_access_from_the_ui_is_found(tmp_path: Path, source: str, problem: str) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/_codec.py": "",
            "pkg/worker.py": "",
            "pkg/ui/__init__.py": "from ._app import app\n",
            "pkg/ui/_app.py": "from ..worker import Worker\n" + source,
        },
    )
    problems = outsider_violations(tmp_path, "pkg")
    assert len(problems) == 1
    assert problems[0].endswith(problem)
