"""`genbuf db laravel-migration`: genbuf's tables as a Laravel migration, for an app that
owns its schema (so that `php artisan migrate:fresh` recreates them).

Generated from the same SQLAlchemy tables `genbuf db check` compares a database with
(genbuffer.db.schema), so what the migration creates is what the check expects. It also
creates Alembic's `alembic_version` at the head revision of the genbuf that wrote it:
`genbuf db upgrade` then applies only the migrations that come after.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.functions import now

from genbuffer.db.schema import LongBytes, metadata

__all__ = ["MIGRATION_NAME", "head_revision", "migration_filename", "render_migration"]

MIGRATION_NAME = "create_genbuf_tables"  # a migration file's name after its timestamp


def head_revision() -> str | None:
    """The newest Alembic revision this genbuf ships."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    from genbuffer.db.upgrade import script_location  # noqa: PLC0415

    return ScriptDirectory(str(script_location())).get_current_head()


def migration_filename(at: datetime | None = None) -> str:
    """A Laravel migration file name (its timestamp orders it among the app's)."""
    stamp = (at or datetime.now(UTC)).strftime("%Y_%m_%d_%H%M%S")
    return f"{stamp}_{MIGRATION_NAME}.php"


def _php(text: str) -> str:
    """A PHP single-quoted string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# SQLAlchemy type -> Blueprint method, tried in order (Boolean before Integer: MySQL's
# BOOLEAN is an integer type; BigInteger before Integer, its base class)
_TYPES: tuple[tuple[type[Any], str], ...] = (
    (BigInteger, "bigInteger"),
    (Boolean, "boolean"),
    (Integer, "integer"),
    (Float, "double"),
    (JSON, "jsonb"),
    (LargeBinary, "binary"),
)


def _type_call(column: Column[Any]) -> str:
    """The Blueprint method call that creates the column's type."""
    kind: Any = column.type
    name = _php(column.name)
    if isinstance(kind, DateTime):
        return f"timestampTz({name})" if kind.timezone else f"timestamp({name})"
    for sa_type, method in _TYPES:
        if isinstance(kind, sa_type):
            return f"{method}({name})"
    if isinstance(kind, String) and not isinstance(kind, Text) and kind.length is not None:
        return f"string({name}, {kind.length})"
    if isinstance(kind, String):
        return f"longText({name})"
    raise TypeError(f"{column.table.name}.{column.name}: no Laravel type for {kind!r}")


def _default(column: Column[Any]) -> str | None:
    """The modifier for the column's server default, if it has one."""
    arg = getattr(column.server_default, "arg", None)
    if isinstance(arg, now):
        return "useCurrent()"
    if isinstance(arg, TextClause):
        literal = arg.text.strip()
        if literal.startswith("'") and literal.endswith("'"):
            return f"default({_php(literal[1:-1])})"
        return f"default({literal})"
    return None


def _column(column: Column[Any]) -> str:
    """One Blueprint column definition."""
    if column.primary_key and isinstance(column.type, BigInteger | Integer):
        return f"$table->bigIncrements({_php(column.name)});"
    parts = [_type_call(column)]
    if column.primary_key:
        parts.append("primary()")
    elif column.nullable:
        parts.append("nullable()")
    if (default := _default(column)) is not None:
        parts.append(default)
    if column.index:
        parts.append(f"index({_php(f'ix_{column.table.name}_{column.name}')})")
    return "$table->" + "->".join(parts) + ";"


def _table(table: Table) -> list[str]:
    """The Schema::create block of one table."""
    lines = [f"        Schema::create({_php(table.name)}, function (Blueprint $table) {{"]
    lines += [f"            {_column(column)}" for column in table.columns]
    for constraint in sorted(table.constraints, key=lambda c: str(c.name)):
        if isinstance(constraint, UniqueConstraint):
            names = ", ".join(_php(c.name) for c in constraint.columns)
            lines.append(f"            $table->unique([{names}], {_php(str(constraint.name))});")
        elif isinstance(constraint, ForeignKeyConstraint):
            (element,) = constraint.elements
            ondelete = (
                f"->onDelete({_php(constraint.ondelete.lower())})" if constraint.ondelete else ""
            )
            lines.append(
                f"            $table->foreign({_php(element.parent.name)}, "
                f"{_php(str(constraint.name))})->references({_php(element.column.name)})"
                f"->on({_php(element.column.table.name)}){ondelete};"
            )
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        if isinstance(index, Index) and len(index.columns) > 1:
            names = ", ".join(_php(c.name) for c in index.columns)
            lines.append(f"            $table->index([{names}], {_php(str(index.name))});")
    lines.append("        });")
    long_bytes = [c.name for c in table.columns if isinstance(c.type, LongBytes)]
    for name in long_bytes:  # Laravel's binary() is BLOB (64 KiB) on MySQL and MariaDB
        null = "NULL" if table.c[name].nullable else "NOT NULL"
        lines.append(
            "        if (in_array(DB::connection($this->getConnection())->getDriverName(), "
            "['mysql', 'mariadb'], true)) {"
        )
        lines.append(
            f"            DB::connection($this->getConnection())->statement("
            f"{_php(f'ALTER TABLE {table.name} MODIFY {name} LONGBLOB {null}')});"
        )
        lines.append("        }")
    return lines


def render_migration(revision: str | None = None) -> str:
    """The migration's PHP source: genbuf's tables in dependency order, and
    `alembic_version` at ``revision`` (default: the head this genbuf ships)."""
    revision = revision or head_revision()
    tables = list(metadata.sorted_tables)
    up: list[str] = []
    for table in tables:
        up += _table(table)
    if revision is not None:
        up += [
            "        Schema::create('alembic_version', function (Blueprint $table) {",
            "            $table->string('version_num', 32)->primary('alembic_version_pkc');",
            "        });",
            "        DB::connection($this->getConnection())->table('alembic_version')"
            f"->insert(['version_num' => {_php(revision)}]);",
        ]
    down = ["        Schema::dropIfExists('alembic_version');"] + [
        f"        Schema::dropIfExists({_php(table.name)});" for table in reversed(tables)
    ]
    body = "\n".join(up)
    dropped = "\n".join(down)
    return f"""<?php

// Written by `genbuf db laravel-migration` (genbuffer.db.laravel): the tables and columns
// `genbuf db check` expects, and Alembic's alembic_version at {revision}, so that
// `genbuf db upgrade` applies only what later versions of genbuf add. Regenerate it
// rather than edit it; a genbuf upgrade that adds a migration needs `genbuf db upgrade`.

use Illuminate\\Database\\Migrations\\Migration;
use Illuminate\\Database\\Schema\\Blueprint;
use Illuminate\\Support\\Facades\\DB;
use Illuminate\\Support\\Facades\\Schema;

return new class extends Migration
{{
    public function up(): void
    {{
{body}
    }}

    public function down(): void
    {{
{dropped}
    }}
}};
"""
