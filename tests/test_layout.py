"""The package's layout stays as docs/design.rst draws it: no cycles, no upward imports.

The tests read the source (an AST walk of every module under ``eventtracking/``), not
the imported package, so an import written inside a function counts as much as one at
the top of a module.

Definitions:

* **An import** of module ``A`` by module ``B`` is any ``import A``, ``import A as x``
  or ``from A import name`` in ``B``, at any depth (top level, function, method,
  ``if TYPE_CHECKING`` block). ``from P import m``, where ``P.m`` is a module, imports
  ``P.m``, not ``P``. Python also runs the ``__init__`` of every package above ``A``;
  those implied imports are not counted.
* **A cycle** is a set of two or more modules each reachable from the others through
  imports; a module that imports itself (``from eventtracking.x import _y`` inside
  ``x/__init__``) is not one.
* **The layers**, lowest first, each module in the layer of the longest prefix listed
  in :data:`LAYERS`:

  0. ``base``: exceptions, typing and the private helpers of ``_util``;
  1. ``core``: contexts, locator, JSON, copy, routing, processors, the tracker;
  2. ``delivery``: batching, the spool;
  3. ``backends``: every backend, with the event bus's 4.x switch (``config``);
  4. ``entry``: what a user or a framework calls first: the package itself, the CLI
     (``__main__``), the Django app, the metadata tools, metrics, and the 4.x entry
     modules ``tasks`` and ``handlers``.

  **An upward import** is an import of a module in a higher layer than the
  importer's. Modules of one layer may import each other (the cycle test still
  applies).
* **A crossing between backends** is an import, by a module of one backend (the
  modules of ``eventtracking.backends`` below its third name: ``celery``,
  ``mongodb``, ``segment``...), of a module of another. A store knows nothing of the
  broker that fed it: what several backends share lives below them (``_util``). The
  4.x paths that re-export a backend (:data:`REEXPORTS`) are not backends.
* **A read of TRACKERS** is the name ``TRACKERS`` anywhere in a module but
  ``eventtracking.tracker``: the registry of trackers belongs to the tracker, and
  everything else asks it through a function (:func:`eventtracking.tracker.registered`).
* **A module of the root** is a ``.py`` file directly in ``eventtracking/``,
  ``__init__.py`` included.
* **A long module** has more than :data:`LONGEST` lines; its docstring must say why,
  in a paragraph that starts with "Why one module".
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "eventtracking"

#: The lowest layer whose prefix is the longest match wins (see the module docstring).
LAYERS = {
    "eventtracking.exceptions": 0,
    "eventtracking.typing": 0,
    "eventtracking.processors.exceptions": 0,
    "eventtracking._util": 0,
    "eventtracking._contextstack": 1,
    "eventtracking._copy": 1,
    "eventtracking._json": 1,
    "eventtracking._orjson": 1,
    "eventtracking.locator": 1,
    "eventtracking.routing": 1,
    "eventtracking.processors": 1,
    "eventtracking.tracker": 1,
    "eventtracking.delivery": 2,
    "eventtracking.spool": 2,
    "eventtracking.backends": 3,
    "eventtracking.config": 3,
    "eventtracking": 4,
}
LAYER_NAMES = ("base", "core", "delivery", "backends", "entry")

#: Modules kept at a 4.x path that only re-export a backend from its folder.
REEXPORTS = {"eventtracking.backends.async_routing"}

#: At most this many modules directly in the package's folder.
ROOT_MODULES = 15
#: A module longer than this says why in its docstring.
LONGEST = 450


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, pathlib.Path]) -> str | None:
    """The deepest module of the package that ``name`` (a dotted path) names."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(known: dict[str, pathlib.Path]) -> list[tuple[str, str, int]]:
    """Every import inside the package: (importer, imported, line)."""
    found = []
    for importer, path in known.items():
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in known else base)
            for target in targets:
                module = resolve(target, known) if target.startswith("eventtracking") else None
                if module is not None and module != importer:
                    found.append((importer, module, node.lineno))
    return found


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)]


def cycles(edges: list[tuple[str, str, int]]) -> list[list[str]]:
    """The strongly connected components of two or more modules (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in edges:
        graph.setdefault(importer, set()).add(imported)
        graph.setdefault(imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def known() -> dict[str, pathlib.Path]:
    return modules()


@pytest.fixture(scope="module")
def edges(known: dict[str, pathlib.Path]) -> list[tuple[str, str, int]]:
    return imports(known)


def test_the_walk_sees_imports_inside_functions(edges: list[tuple[str, str, int]]) -> None:
    """The walk is not fooled by an import written inside a function: the Django app
    imports its checks in ``ready()`` only, and the walk finds that import."""
    assert ("eventtracking.django.apps", "eventtracking.django.checks") in {
        (a, b) for a, b, _ in edges
    }


def test_no_import_cycles(edges: list[tuple[str, str, int]]) -> None:
    """No two modules of the package import each other, directly or through others."""
    assert cycles(edges) == []


def test_no_upward_imports(edges: list[tuple[str, str, int]]) -> None:
    """No module imports a module of a higher layer (base < core < delivery < backends <
    entry; see the module docstring)."""
    upward = sorted(
        f"{importer}:{line} ({LAYER_NAMES[layer(importer)]}) imports {imported} "
        f"({LAYER_NAMES[layer(imported)]})"
        for importer, imported, line in edges
        if layer(imported) > layer(importer)
    )
    assert upward == []


def backend_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["eventtracking", "backends"] or len(parts) < 3 or module in REEXPORTS:
        return None
    return parts[2]


def test_no_backend_imports_another(edges: list[tuple[str, str, int]]) -> None:
    """A backend's modules import no module of another backend: MongoDB and Segment take
    the id an event travelled with from ``_util``, not from the Celery folder."""
    crossings = sorted(
        f"{importer}:{line} imports {imported}"
        for importer, imported, line in edges
        if backend_of(importer)
        and backend_of(imported)
        and backend_of(importer) != backend_of(imported)
    )
    assert crossings == []


def test_only_the_tracker_reads_its_registry(known: dict[str, pathlib.Path]) -> None:
    """Nothing but ``eventtracking.tracker`` names ``TRACKERS``: the rest of the package is
    handed its tracker, or asks the tracker for it."""
    readers = sorted(
        f"{name}:{node.lineno}"
        for name, path in known.items()
        if name != "eventtracking.tracker"
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Name) and node.id == "TRACKERS")
        or (isinstance(node, ast.Attribute) and node.attr == "TRACKERS")
        or (isinstance(node, ast.alias) and node.name == "TRACKERS")
    )
    assert readers == []


def test_the_root_holds_the_core_only() -> None:
    """At most 15 modules sit directly in ``eventtracking/``; each delivery path, and
    each group of helpers, has a folder of its own."""
    root = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root) <= ROOT_MODULES, root


def test_a_long_module_says_why(known: dict[str, pathlib.Path]) -> None:
    """A module over 450 lines explains, in its docstring, why it is not split."""
    unexplained = []
    for name, path in known.items():
        text = path.read_text()
        lines = text.count("\n")
        if lines > LONGEST and "Why one module" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{name} ({lines} lines)")
    assert unexplained == []


def test_the_layers_cover_every_module(known: dict[str, pathlib.Path]) -> None:
    """Every module of the package falls in a layer (the table cannot silently miss one)."""
    assert all(0 <= layer(name) < len(LAYER_NAMES) for name in known)
