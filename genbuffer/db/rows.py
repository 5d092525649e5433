"""The tables as Core objects, and the generation row as compaction reads it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, CursorResult, any_, bindparam, select
from sqlalchemy import exc as sa_exc

from genbuffer.db.schema import (
    genbuf_job_leases,
    genbuf_job_runs,
    generation_artifact_history,
    generation_chunks,
    generation_compactions,
    metadata_validation_issues,
    scenario_generations,
)

__all__ = [
    "CHUNKS",
    "GEN",
    "HISTORY",
    "ISSUES",
    "LEASES",
    "LEDGER",
    "ROW_COLUMNS",
    "RUNS",
    "GenerationRow",
    "Prepared",
    "lock_rows",
    "new_id",
    "prepared",
    "sent_directly",
    "to_row",
]

GEN = scenario_generations
ISSUES = metadata_validation_issues
CHUNKS = generation_chunks
HISTORY = generation_artifact_history
LEDGER = generation_compactions
RUNS = genbuf_job_runs
LEASES = genbuf_job_leases


@dataclass(frozen=True)
class GenerationRow:
    """The columns of a `scenario_generations` row that compaction reads."""

    id: int
    organization_id: int
    scenario_id: int | None
    metadata: Any
    compacted: str | None
    chunk_count: int | None
    llm_response: Any = None
    compacted_at: datetime | None = None
    compacted_by: str | None = None
    last_validation_issue_id: int | None = None
    created_at: datetime | None = None


ROW_COLUMNS = (
    GEN.c.id,
    GEN.c.organization_id,
    GEN.c.scenario_id,
    GEN.c.metadata,
    GEN.c.compacted,
    GEN.c.chunk_count,
    GEN.c.llm_response,
    GEN.c.compacted_at,
    GEN.c.compacted_by,
    GEN.c.last_validation_issue_id,
    GEN.c.created_at,
)


# Built once: compaction locks and writes a row per generation, thousands of times a batch.
LOCK_ROW = select(*ROW_COLUMNS).where(GEN.c.id == bindparam("id")).with_for_update()


@cache  # PostgreSQL only: built on first use
def lock_rows() -> Any:
    """Several rows locked in id order, on PostgreSQL: ``WHERE id = ANY(:ids) ORDER BY id
    FOR UPDATE`` (a batch of compactions' rows in one round trip)."""
    from sqlalchemy.dialects.postgresql import ARRAY  # noqa: PLC0415  (PostgreSQL only)

    ids = bindparam("ids", type_=ARRAY(GEN.c.id.type))
    return select(*ROW_COLUMNS).where(GEN.c.id == any_(ids)).order_by(GEN.c.id).with_for_update()


def to_row(values: Sequence[Any]) -> GenerationRow:
    """A fetched row of ROW_COLUMNS as a GenerationRow."""
    return GenerationRow(*values)


def new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT generated (RETURNING where the dialect has it)."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("the database returned no id for the new row")
    return int(key[0])


class Prepared:
    """A statement compiled once for a dialect and sent as its SQL text on the driver's
    cursor: what SQLAlchemy does again at every ``execute`` (the statement's cache key,
    a walk of its whole tree, the compiled cache's lookup, an execution context and a
    result object) is done once or not at all: ~0.15-0.3 ms of CPU a compaction of a
    worker (bench/NOTES.md, items 12 and 13). The bind processors of the parameters'
    types still apply (JSON serialised, bytes wrapped); the statement's own literals
    are bound as compiled. A driver error is SQLAlchemy's, as ``execute`` raises it (a
    lost connection invalidated). SQLAlchemy's cursor events do not see these
    statements (``sent_directly`` lists them). For the statements a compaction runs
    every time (a worker runs thousands), on PostgreSQL."""

    __slots__ = ("literals", "processors", "rows", "sql")

    def __init__(self, statement: Any, connection: Connection) -> None:
        dialect = connection.dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.rows = bool(statement.is_select)  # (the driver's description builds objects)
        binds = {name: bind for bind, name in compiled.bind_names.items()}  # as rendered
        self.literals = {
            name: value
            for name, value in compiled.params.items()
            if value is not None and not binds[name].required
        }
        self.processors = {
            name: processor
            for name, bind in binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def execute(self, connection: Connection, params: dict[str, Any]) -> Sequence[Any] | None:
        """Run the statement with ``params`` (by name); the first row it returns, if any."""
        rows = self._run(connection, params, every=False)
        return rows[0] if rows else None

    def fetch_all(self, connection: Connection, params: dict[str, Any]) -> list[Sequence[Any]]:
        """Run the statement (a SELECT) with ``params``; every row it returns."""
        return self._run(connection, params, every=True)

    def _run(
        self, connection: Connection, params: dict[str, Any], *, every: bool
    ) -> list[Sequence[Any]]:
        bound = self.literals | params
        for name, processor in self.processors.items():
            if name in bound:
                bound[name] = processor(bound[name])
        driver = connection.connection.dbapi_connection
        dialect = connection.dialect
        try:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(self.sql, bound)
                if not self.rows:
                    return []
                if every:
                    return list(cursor.fetchall())
                row = cursor.fetchone()
                return [] if row is None else [row]
        except dialect.loaded_dbapi.Error as error:
            lost = dialect.is_disconnect(error, driver, None)
            if lost:
                connection.invalidate()
            raise sa_exc.DBAPIError.instance(
                self.sql,
                bound,
                error,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from error


def sent_directly() -> list[str]:
    """The SQL of every statement prepared so far (Prepared: past SQLAlchemy's events)."""
    return [statement.sql for statement in _PREPARED.values()]


_PREPARED: dict[tuple[str, Any], Prepared] = {}


def prepared(statement: Any, connection: Connection) -> Prepared:
    """``statement`` prepared for the connection's dialect, once (statements built once)."""
    key = (connection.dialect.name, statement)
    found = _PREPARED.get(key)
    if found is None:
        found = _PREPARED[key] = Prepared(statement, connection)
    return found
