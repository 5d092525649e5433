"""`genbuf db check`: what the database lacks or holds differently from what genbuf needs.

Tolerant of a schema that a Laravel app created: `json` where genbuf would use
`jsonb`, timestamps without time zone, and extra columns are fine (reported as
notes). A missing table or column, or a column genbuf cannot use, is an error.

The `jsonb` and time-zone notes are PostgreSQL's only: there genbuf's own migrations
create `jsonb` and `timestamptz`, so a `json` or naive timestamp column says the table
came from elsewhere. SQLite and MySQL/MariaDB have neither type: what genbuf's own
`db upgrade` creates there is what they are, nothing to note.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Column, Engine, inspect
from sqlalchemy import types as sa_types
from sqlalchemy.engine.interfaces import ReflectedColumn

from genbuffer.db.engine import database_errors
from genbuffer.db.schema import metadata
from genbuffer.documents import Document

__all__ = ["CheckResult", "CheckRow", "MigrationWritten", "UpgradeResult", "check_schema"]

Severity = Literal["error", "warning", "note"]


class UpgradeResult(Document):
    """What `db upgrade --json` prints."""

    ok: bool = True

    database: str
    revision: str | None


class MigrationWritten(Document):
    """What `db laravel-migration --json` prints."""

    ok: bool = True

    path: str
    revision: str | None


class CheckRow(Document):
    """One difference: table, column, severity (error, warning, note), message."""

    table: str
    column: str | None
    severity: Severity
    message: str


class CheckResult(Document):
    """What `db check --json` prints."""

    database: str
    ok: bool
    problems: list[CheckRow]


# Coarse type families, tried in order; BOOLEAN is TINYINT(1) on MySQL/MariaDB, hence
# an integer; REAL, DOUBLE PRECISION and DOUBLE are all floats.
_FAMILIES: tuple[tuple[str, tuple[type[Any], ...]], ...] = (
    ("integer", (sa_types.Integer, sa_types.Boolean)),
    ("float", (sa_types.Float,)),
    ("datetime", (sa_types.DateTime, sa_types.TIMESTAMP)),
)


def _family(kind: sa_types.TypeEngine[Any]) -> str:
    """A coarse type family, enough to tell whether genbuf can use a column."""
    name = type(kind).__name__.upper()
    if isinstance(kind, sa_types.JSON) or "JSON" in name:
        return "json"
    for family, types in _FAMILIES:
        if isinstance(kind, types):
            return family
    if isinstance(kind, sa_types.LargeBinary) or name in {"BYTEA", "BLOB", "LONGBLOB"}:
        return "bytes"
    if isinstance(kind, sa_types.String):
        return "text"
    return name.lower()


def _problem(table: str, column: str | None, severity: Severity, message: str) -> CheckRow:
    return CheckRow(table=table, column=column, severity=severity, message=message)


def check_schema(engine: Engine, url: str) -> list[CheckRow]:
    """Compare the live schema with genbuf's models."""
    problems: list[CheckRow] = []
    with database_errors(url), engine.connect() as connection:
        inspector = inspect(connection)
        mariadb = connection.dialect.name in {"mysql", "mariadb"}
        postgresql = connection.dialect.name == "postgresql"
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name):
                problems.append(_problem(table.name, None, "error", "table is missing"))
                continue
            live = {column["name"]: column for column in inspector.get_columns(table.name)}
            for column in table.columns:
                found = live.get(column.name)
                if found is None:
                    problems.append(_problem(table.name, column.name, "error", "column is missing"))
                    continue
                problems.extend(_compare(table.name, column, found, mariadb, postgresql))
            known = {column.name for column in table.columns}
            for name, found in live.items():
                if name not in known and not found["nullable"] and found.get("default") is None:
                    problems.append(
                        _problem(
                            table.name,
                            name,
                            "note",
                            "extra NOT NULL column without a default: genbuf never inserts "
                            "rows here in production, so this only matters for demos",
                        )
                    )
    return problems


def _compare(
    table: str, column: Column[Any], found: ReflectedColumn, mariadb: bool, postgresql: bool
) -> list[CheckRow]:
    name = column.name
    wanted, have = _family(column.type), _family(found["type"])
    if mariadb and wanted == "json" and have == "text":
        have = "json"  # MariaDB's JSON is LONGTEXT with a JSON check
    problems = []
    if wanted != have:
        problems.append(
            _problem(table, name, "error", f"type is {found['type']}, genbuf needs {wanted}")
        )
    elif not postgresql:  # no jsonb, no time zone in a column: nothing to note
        pass
    elif wanted == "json" and "JSONB" not in str(found["type"]).upper():
        problems.append(_problem(table, name, "note", f"{found['type']} rather than jsonb: works"))
    elif wanted == "datetime" and not getattr(found["type"], "timezone", False):
        problems.append(
            _problem(table, name, "note", "timestamp without time zone: genbuf writes UTC values")
        )
    if column.nullable and not found["nullable"] and found.get("default") is None:
        problems.append(
            _problem(table, name, "error", "NOT NULL without a default, genbuf may write NULL")
        )
    elif not column.nullable and found["nullable"]:
        problems.append(_problem(table, name, "warning", "nullable here; genbuf always fills it"))
    return problems
