"""The layering holds: which package may import which dependency, and nothing imports up.

Imports are read from the source (``ast``), wherever they stand: at module level, in a
function (deferred), or under ``if TYPE_CHECKING``. Between genbuffer's own modules they
form a graph that must have no cycle, and must point down: the CLI above the public API
and runtime.py, those above the services (observation/ above engine/ above operations/
above compaction/ and ingest/), the services above the adapters (redis/, lua/, db/,
objects/) and the foundation at the root.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.urls import REPO_ROOT

PACKAGE = REPO_ROOT / "genbuffer"
# dependency -> the only part of genbuffer that may import it
OWNERS = {
    "redis": "genbuffer/redis/",
    "hiredis": "genbuffer/redis/",
    "fakeredis": "genbuffer/redis/",
    "sqlalchemy": "genbuffer/db/",
    "psycopg": "genbuffer/db/",
    "alembic": "genbuffer/db/",
    "obstore": "genbuffer/objects/",
    "zstandard": "genbuffer/objects/",
    "ijson": "genbuffer/compaction/",
    "jsonschema": "genbuffer/compaction/",
    "jsonschema_specifications": "genbuffer/compaction/",
    "referencing": "genbuffer/compaction/",
}
# the adapters: they import nothing above them (the foundation and each other only)
ADAPTERS = ("genbuffer.redis", "genbuffer.lua", "genbuffer.db", "genbuffer.objects")
# the foundation, at the root: it imports no service (the adapters at most, and the
# adapters it: both sit below the services)
FOUNDATION = frozenset(
    f"genbuffer.{name}"
    for name in (
        "settings",
        "config_report",
        "errors",
        "keys",
        "durations",
        "states",
        "documents",
        "prefixes",
        "faults",
        "laravel_ascii",
    )
)
# the services, in layers from the bottom up: a package imports its own layer's
# package and those below, never one above nor another package of its own layer
SERVICES = (
    ("genbuffer.compaction", "genbuffer.ingest"),  # the compaction core; genbuf push
    ("genbuffer.operations",),  # the cron jobs, their leases and run records
    ("genbuffer.engine",),  # the compaction engine: compact-pending (a cron job), worker
    ("genbuffer.observation",),  # status, metrics, doctor, reports, read-back
)
# above the services: the public API (genbuffer/__init__.py re-exports them) and the
# composition root (runtime.py builds one command's adapters and compaction config);
# above those, the CLI
TOP = frozenset({"genbuffer", "genbuffer.runtime"})
CLI = ("genbuffer.cli", "genbuffer.launch")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _modules() -> list[tuple[str, list[str]]]:
    return [(str(path.relative_to(REPO_ROOT)), _imports(path)) for path in PACKAGE.rglob("*.py")]


@pytest.mark.parametrize("dependency", sorted(OWNERS))
def test_each_dependency_is_imported_by_its_adapter_only(dependency: str) -> None:
    """redis-py only under genbuffer/redis/, SQLAlchemy and psycopg only under genbuffer/db/."""
    owner = OWNERS[dependency]
    outside = [
        module
        for module, names in _modules()
        if not module.startswith(owner)
        and any(name == dependency or name.startswith(f"{dependency}.") for name in names)
    ]
    assert outside == [], f"{dependency} imported outside {owner}: {outside}"


def _module_names() -> dict[str, Path]:
    """genbuffer's modules by dotted name (a package by its own name)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _targets(node: ast.Import | ast.ImportFrom, here: str, modules: dict[str, Path]) -> set[str]:
    """The genbuffer modules an import statement loads (``from P import m``: the module
    P.m when there is one, else P)."""
    if isinstance(node, ast.Import):
        return {_owning(alias.name, modules) for alias in node.names} - {""}
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        parts = here.split(".")
        drop = node.level - (modules[here].name == "__init__.py")
        base = ".".join([*parts[: len(parts) - drop], *([base] if base else [])])
    if not base.startswith("genbuffer"):
        return set()
    return {
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _owning(base, modules)
        for alias in node.names
    } - {""}


def _owning(name: str, modules: dict[str, Path]) -> str:
    """The genbuffer module ``name`` is, or is in ("" when none)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name if name.startswith("genbuffer") else ""


def _graph() -> dict[str, set[str]]:
    """Every genbuffer module and the genbuffer modules it imports, anywhere in it."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets |= _targets(node, name, modules)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle (a path back to its start) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while (member := stack.pop()) != node:
                group.add(member)
            groups.append(group | {node})

    for node in sorted(graph):
        if node not in index:
            visit(node)
    for group in groups:
        if len(group) > 1:
            yield _path_back(graph, group)


def _path_back(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & group):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no path back to {start}")  # a strongly connected group has one


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(f"{package}.") for package in packages)


def _package(name: str) -> str:
    """The top-level package (or root module) of genbuffer that ``name`` is in."""
    return ".".join(name.split(".")[:2])


def _layer(name: str) -> int:
    """0 the foundation and the adapters, 1.. the service layers, then the top, the CLI."""
    if _in(name, CLI):
        return len(SERVICES) + 2
    if name in TOP:
        return len(SERVICES) + 1
    for layer, packages in enumerate(SERVICES, start=1):
        if _in(name, packages):
            return layer
    assert name in FOUNDATION or _in(name, ADAPTERS), f"{name}: in no layer of test_layout"
    return 0


def _upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports of a higher layer, or of another service package of the same layer."""
    return {
        (name, target)
        for name, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(name)
        or (
            _layer(target) == _layer(name)
            and 0 < _layer(name) <= len(SERVICES)
            and _package(target) != _package(name)
        )
    }


def test_the_graph_is_read_whole() -> None:
    """The reader sees every kind of import: at module level, deferred in a function,
    under TYPE_CHECKING, ``from package import module``; else the tests below prove
    nothing."""
    graph = _graph()
    assert "genbuffer.compaction.run" in graph["genbuffer.compaction"]  # TYPE_CHECKING
    assert "genbuffer.compaction.apply" in graph["genbuffer.compaction.run"]  # package import
    assert "genbuffer.compaction" in graph["genbuffer.runtime"]  # deferred, a package's name
    assert "genbuffer.db.leases" in graph["genbuffer.config_report"]  # in a function
    assert len(graph) > 80


def test_no_import_cycle() -> None:
    """No two genbuffer modules import each other, directly or around a circle, however
    the imports are written (deferred in a function, under TYPE_CHECKING): following a
    request never climbs back up."""
    cycles = [" -> ".join(cycle) for cycle in _cycles(_graph())]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_no_upward_import() -> None:
    """The adapters (redis/, lua/, db/, objects/) and the foundation at the root import
    no service (nor the CLI, the public API or runtime.py); a service package imports
    only those below it (observation → engine → operations → compaction, ingest), never
    the CLI nor what is built above it (the public API, runtime.py)."""
    assert sorted(_upward(_graph())) == []


def test_the_layers_catch_a_wrong_way_import() -> None:
    """The rule itself: up a layer, or across to another package of the same layer, is
    caught; down, or within a package, is not."""
    graph = {
        "genbuffer.operations.purge_chunks": {"genbuffer.engine.burst", "genbuffer.db.leases"},
        "genbuffer.compaction.apply": {"genbuffer.ingest.push", "genbuffer.compaction.plan"},
        "genbuffer.observation.status": {"genbuffer.engine.idleness", "genbuffer.cli"},
        "genbuffer.db.leases": {"genbuffer.operations.exclusion", "genbuffer.errors"},
    }
    assert sorted(_upward(graph)) == [
        ("genbuffer.compaction.apply", "genbuffer.ingest.push"),
        ("genbuffer.db.leases", "genbuffer.operations.exclusion"),
        ("genbuffer.observation.status", "genbuffer.cli"),
        ("genbuffer.operations.purge_chunks", "genbuffer.engine.burst"),
    ]


def test_no_private_api_of_a_dependency() -> None:
    """No `typer._x`, `redis._x`, … : public APIs of dependencies only, in every
    package (the services' as well as the adapters')."""
    read = {_package(module.removesuffix(".py").replace("/", ".")) for module, _ in _modules()}
    packages = {*ADAPTERS, *CLI, *(package for layer in SERVICES for package in layer)}
    assert packages <= read, f"not read: {sorted(packages - read)}"
    private = [
        (module, name)
        for module, names in _modules()
        for name in names
        if not name.startswith("genbuffer")
        and any(part.startswith("_") and part != "__future__" for part in name.split("."))
    ]
    assert private == []


def test_every_public_name_resolves() -> None:
    """`from genbuffer import X` works for every name of genbuffer.__all__ (lazy exports)."""
    import genbuffer  # noqa: PLC0415

    for name in genbuffer.__all__:
        assert getattr(genbuffer, name) is not None, name
