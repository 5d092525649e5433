"""The layering holds: which package may import which dependency, and nothing imports up."""

from __future__ import annotations

import ast
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
}
# the adapters never import the services or the CLI above them
ADAPTERS = ("genbuffer/redis/", "genbuffer/db/")
ABOVE = (
    "genbuffer.cli",
    "genbuffer.compaction",
    "genbuffer.compactor",
    "genbuffer.engine",
    "genbuffer.maintenance",
)


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


def test_adapters_do_not_import_the_layers_above() -> None:
    """genbuffer.redis and genbuffer.db never import a service or the CLI."""
    upward = [
        (module, name)
        for module, names in _modules()
        if module.startswith(ADAPTERS)
        for name in names
        if name.startswith(ABOVE)
    ]
    assert upward == []


def test_no_private_api_of_a_dependency() -> None:
    """No `typer._x`, `redis._x`, … : public APIs of dependencies only."""
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
