"""With db.artifact, the only SQL. Every call maps driver failures to genbuffer errors."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from genbuffer.db.artifact import save_artifact
from genbuffer.db.engine import database_errors, make_engine
from genbuffer.db.schema import (
    GenerationArtifactHistory,
    GenerationChunk,
    MetadataValidationIssue,
    ScenarioGeneration,
)
from genbuffer.settings import Settings

__all__ = ["GenerationRow", "Repository", "Transaction"]

# Core tables of the ORM models (the repository writes Core statements, not ORM units).
GEN = cast(Table, ScenarioGeneration.__table__)
ISSUES = cast(Table, MetadataValidationIssue.__table__)
CHUNKS = cast(Table, GenerationChunk.__table__)
HISTORY = cast(Table, GenerationArtifactHistory.__table__)
_HISTORY_COPIED = (
    "organization_id",
    "compacted",
    "llm_response",
    "metadata",
    "chunk_count",
    "compacted_at",
    "compacted_by",
)
BACKUP_BATCH = 1000  # rows per INSERT … VALUES statement


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


_ROW_COLUMNS = (
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
_LOCK_ROW = select(*_ROW_COLUMNS).where(GEN.c.id == bindparam("id")).with_for_update()


def _row(values: Sequence[Any]) -> GenerationRow:
    return GenerationRow(*values)


class Transaction:
    """The statements that run inside one database transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def lock_generation(self, generation_id: int) -> GenerationRow | None:
        """Read a generation row and lock it until the transaction ends."""
        found = self.connection.execute(_LOCK_ROW, {"id": generation_id}).first()
        return None if found is None else _row(found)

    def update_generation(self, generation_id: int, values: dict[str, Any]) -> None:
        """Write some columns of one row (the compaction writes with save_artifact)."""
        self.connection.execute(update(GEN).where(GEN.c.id == generation_id).values(**values))

    def save_artifact(
        self,
        generation_id: int,
        encoded: bytes,
        *,
        llm_response: str,
        values: dict[str, Any],
    ) -> None:
        """Write a compacted artifact and the row's other compaction columns (see db.artifact).

        ``llm_response``: "json" (parse the artifact), "null", or "keep" (leave it).
        """
        save_artifact(
            self.connection, generation_id, encoded, llm_response=llm_response, values=values
        )

    def insert_issue(
        self,
        *,
        organization_id: int | None,
        generation_id: int,
        mode: str,
        source: str,
        errors: list[dict[str, Any]],
        created_at: datetime,
    ) -> int:
        """Insert a `metadata_validation_issues` row; returns its id."""
        result = self.connection.execute(
            insert(ISSUES).values(
                organization_id=organization_id,
                generation_id=generation_id,
                mode=mode,
                source=source,
                errors=errors,
                created_at=created_at,
            )
        )
        return _new_id(result)

    def keep_history(self, generation_id: int, reason: str) -> int:
        """Copy the row's artifact into `generation_artifact_history` (server-side); its id.

        Runs with the row locked, so no other history row of this generation can be
        inserted meanwhile: the highest id is this one.
        """
        source = select(
            *(GEN.c[name] for name in _HISTORY_COPIED),
            GEN.c.id,
            bindparam("reason", reason),
        ).where(GEN.c.id == generation_id)
        self.connection.execute(
            insert(HISTORY).from_select([*_HISTORY_COPIED, "generation_id", "reason"], source)
        )
        return int(
            self.connection.execute(
                select(func.max(HISTORY.c.id)).where(HISTORY.c.generation_id == generation_id)
            ).scalar_one()
        )

    def next_backup_seq(self, generation_id: int) -> int:
        """The `seq` after the generation's last chunk backup (0 when it has none)."""
        last = self.connection.execute(
            select(func.max(CHUNKS.c.seq)).where(CHUNKS.c.generation_id == generation_id)
        ).scalar_one()
        return 0 if last is None else int(last) + 1

    def backup_chunks(
        self,
        organization_id: int,
        generation_id: int,
        first_seq: int,
        chunks: Iterable[bytes | memoryview],
    ) -> None:
        """Back raw chunks up in `generation_chunks` from ``first_seq``; re-runs are no-ops.

        Chunks may be views; a batch at a time is copied for the driver.
        """
        dialect = self.connection.dialect.name
        source = iter(chunks)
        start = 0
        while batch := list(islice(source, BACKUP_BATCH)):
            rows = [
                {
                    "organization_id": organization_id,
                    "generation_id": generation_id,
                    "seq": first_seq + start + offset,
                    "content": bytes(chunk),
                }
                for offset, chunk in enumerate(batch)
            ]
            start += len(batch)
            if dialect == "postgresql":
                stmt: Any = postgresql.insert(CHUNKS).on_conflict_do_nothing()
            elif dialect == "sqlite":
                stmt = sqlite.insert(CHUNKS).on_conflict_do_nothing()
            else:  # MySQL / MariaDB
                stmt = insert(CHUNKS).prefix_with("IGNORE")
            self.connection.execute(stmt, rows)


class Repository:
    """Transactions and maintenance queries against one database."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    @classmethod
    def from_settings(cls, settings: Settings) -> Repository:
        """Open the configured database (nothing connects until the first query)."""
        url = settings.effective_database_url()
        return cls(make_engine(url), url)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with database_errors(self.url), self.engine.begin() as connection:
            yield Transaction(connection)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Map driver errors raised in the block to genbuffer errors."""
        with database_errors(self.url):
            yield

    @contextmanager
    def job_lock(self, name: str) -> Iterator[bool]:
        """Hold the cross-process lock ``name`` for the block; yields False if it is taken.

        PostgreSQL: a session advisory lock; MySQL/MariaDB: GET_LOCK; SQLite: flock on
        a file beside the database. Each is released when its process dies, so a
        killed cron run never leaves a stale lock behind.
        """
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            with _file_lock(self.engine.url.database, name) as acquired:
                yield acquired
            return
        lock_key = int.from_bytes(
            hashlib.sha256(f"genbuf:{name}".encode()).digest()[:8], "big", signed=True
        )
        with database_errors(self.url), self.engine.connect() as opened:
            # autocommit: the lock is held by the session, with no transaction left open
            connection = opened.execution_options(isolation_level="AUTOCOMMIT")
            if dialect == "postgresql":
                acquired = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": lock_key}
                ).scalar_one()
            elif dialect in {"mysql", "mariadb"}:
                acquired = (
                    connection.execute(
                        text("SELECT GET_LOCK(:name, 0)"), {"name": f"genbuf:{name}"}
                    ).scalar_one()
                    == 1
                )
            else:
                acquired = True
            try:
                yield bool(acquired)
            finally:
                if acquired and dialect == "postgresql":
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key})
                elif acquired and dialect in {"mysql", "mariadb"}:
                    connection.execute(
                        text("SELECT RELEASE_LOCK(:name)"), {"name": f"genbuf:{name}"}
                    )

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        with database_errors(self.url), self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def get_generation(self, generation_id: int) -> GenerationRow | None:
        """Read one generation row without locking it."""
        with database_errors(self.url), self.engine.connect() as connection:
            found = connection.execute(
                select(*_ROW_COLUMNS).where(GEN.c.id == generation_id)
            ).first()
        return None if found is None else _row(found)

    def create_generation(
        self,
        organization_id: int,
        scenario_id: int | None = None,
        metadata: Any = None,
        generation_id: int | None = None,
    ) -> int:
        """Insert a generation row (the producer app's job; used by demos and smoke tests)."""
        values: dict[str, Any] = {
            "organization_id": organization_id,
            "scenario_id": scenario_id,
            "metadata": {} if metadata is None else metadata,
        }
        if generation_id is not None:
            values["id"] = generation_id
        with self.transaction() as tx:
            result = tx.connection.execute(insert(GEN).values(**values))
            return _new_id(result)

    def issue(self, issue_id: int) -> dict[str, Any] | None:
        """One `metadata_validation_issues` row as a dict."""
        with database_errors(self.url), self.engine.connect() as connection:
            found = connection.execute(select(ISSUES).where(ISSUES.c.id == issue_id)).first()
        return None if found is None else dict(found._mapping)

    def history(self, generation_id: int) -> list[dict[str, Any]]:
        """The generation's replaced artifacts, oldest first."""
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execute(
                select(HISTORY)
                .where(HISTORY.c.generation_id == generation_id)
                .order_by(HISTORY.c.id)
            )
            return [dict(row._mapping) for row in rows]

    def backups(self, generation_id: int) -> list[bytes]:
        """The backed-up chunks of a generation, in order."""
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execute(
                select(CHUNKS.c.content)
                .where(CHUNKS.c.generation_id == generation_id)
                .order_by(CHUNKS.c.seq)
            )
            return [bytes(row[0]) for row in rows]

    # -- retention purge -------------------------------------------------------------

    def old_chunks_kept(self, cutoff: datetime) -> int:
        """Count backups older than ``cutoff`` (after a purge: those it had to keep)."""
        with database_errors(self.url), self.engine.connect() as connection:
            query = select(func.count()).where(CHUNKS.c.created_at < cutoff)
            return int(connection.execute(query).scalar_one())

    def purgeable_chunks(self, cutoff: datetime) -> tuple[int, int]:
        """Count backups older than ``cutoff``: (of compacted generations, of others kept)."""
        compacted = select(GEN.c.id).where(GEN.c.compacted_at.is_not(None))
        with database_errors(self.url), self.engine.connect() as connection:
            old = CHUNKS.c.created_at < cutoff
            purgeable = connection.execute(
                select(func.count()).where(old, CHUNKS.c.generation_id.in_(compacted))
            ).scalar_one()
            kept = connection.execute(
                select(func.count()).where(old, CHUNKS.c.generation_id.not_in(compacted))
            ).scalar_one()
        return int(purgeable), int(kept)

    def analyze_if_never_analyzed(self) -> bool:
        """PostgreSQL: ANALYZE `scenario_generations` and `generation_chunks` when either
        has no statistics (just created, restored or truncated); True if it ran.

        Without statistics the planner joins them with nested loops of bitmap scans,
        ~50x slower for a purge batch. ANALYZE samples, so this costs well under a
        second even on a large table (and is skipped with a warning, not an error, for
        a role that does not own them).
        """
        if self.engine.dialect.name != "postgresql":
            return False
        with self.transaction() as tx:
            fresh = tx.connection.execute(_NEVER_ANALYZED).first()
            if fresh is not None:
                tx.connection.execute(text("ANALYZE scenario_generations, generation_chunks"))
        return fresh is not None

    def old_chunk_ids(self, cutoff: datetime) -> tuple[int, int] | None:
        """(lowest, highest) id of the backups older than ``cutoff``; None if there are none."""
        with database_errors(self.url), self.engine.connect() as connection:
            low, high = connection.execute(
                select(func.min(CHUNKS.c.id), func.max(CHUNKS.c.id)).where(
                    CHUNKS.c.created_at < cutoff
                )
            ).one()
        return None if low is None else (int(low), int(high))

    def purge_chunks_range(self, cutoff: datetime, low: int, high: int) -> int:
        """Delete the purgeable backups with ``low < id <= high``, in one transaction.

        An id range, not ORDER BY … LIMIT: each batch is one primary-key range scan
        whatever the planner's statistics say (a fresh, unanalysed table once chose a
        nested loop of 1,000 bitmap scans: 28 s a batch), and no batch walks again
        over rows an earlier one passed.
        """
        compacted = (
            select(GEN.c.id)
            .where(GEN.c.id == CHUNKS.c.generation_id, GEN.c.compacted_at.is_not(None))
            .exists()
        )
        statement = delete(CHUNKS).where(
            CHUNKS.c.id > low, CHUNKS.c.id <= high, CHUNKS.c.created_at < cutoff, compacted
        )
        with self.transaction() as tx:
            if tx.connection.dialect.name == "postgresql":
                _relaxed_commit(tx.connection)  # a lost purge commit is redone next run
            return int(tx.connection.execute(statement).rowcount)

    # -- metadata.compacted migration ------------------------------------------------

    def legacy_blob_rows(self) -> int:
        """Count rows whose metadata still holds a `compacted` blob."""
        with database_errors(self.url), self.engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).where(_has_legacy_blob(connection))
                ).scalar_one()
            )

    def legacy_blob_batch(self, after_id: int, batch_size: int) -> list[GenerationRow]:
        """The next rows (by id, after ``after_id``) whose metadata holds a `compacted` blob."""
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execute(
                select(*_ROW_COLUMNS)
                .where(GEN.c.id > after_id, _has_legacy_blob(connection))
                .order_by(GEN.c.id)
                .limit(batch_size)
            )
            return [_row(row) for row in rows]

    def supports_bulk_migration(self) -> bool:
        """Whether the legacy-blob move can run as set-based SQL (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    def id_bounds(self) -> tuple[int, int] | None:
        """(lowest, highest) id of `scenario_generations`, or None when it is empty."""
        with self.transaction() as tx:
            low, high = tx.connection.execute(select(func.min(GEN.c.id), func.max(GEN.c.id))).one()
        return None if low is None else (int(low), int(high))

    def migrate_blobs_range(self, low: int, high: int, dry_run: bool) -> tuple[int, list[int]]:
        """Move the blobs of rows ``low < id <= high`` in SQL: (rows moved, conflict ids).

        A blob moves when it is a canonical base64 string and the column is empty or
        equal; anything else is a conflict, reported and left alone. One short
        transaction; an id range rather than ORDER BY … LIMIT, so each batch is one
        index range scan, like a hand-written ranged UPDATE.
        """
        params = {"low": low, "high": high}
        try:
            return self._migrate_range(params, dry_run, careful=False)
        except sa_exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _DECODE_REFUSED:
                raise
            # a malformed blob in this range: judge it again by regex, which never raises
            return self._migrate_range(params, dry_run, careful=True)

    def _migrate_range(
        self, params: dict[str, int], dry_run: bool, *, careful: bool
    ) -> tuple[int, list[int]]:
        with self.transaction() as tx:
            if dry_run:
                judged = tx.connection.execute(_JUDGE[careful], params).all()
                return sum(1 for _, ok in judged if ok), [row_id for row_id, ok in judged if not ok]
            _relaxed_commit(tx.connection)
            moved = len(tx.connection.execute(_MOVE[careful], params).all())
            return moved, list(tx.connection.execute(_CONFLICTS, params).scalars())

    def save_many(self, updates: dict[int, dict[str, Any]]) -> None:
        """Apply per-row column updates in one transaction."""
        with self.transaction() as tx:
            for row_id, values in updates.items():
                tx.update_generation(row_id, values)


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT generated (RETURNING where the dialect has it)."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("the database returned no id for the new row")
    return int(key[0])


@contextmanager
def _file_lock(database: str | None, name: str) -> Iterator[bool]:
    """An exclusive, non-blocking flock beside a SQLite file (none for in-memory)."""
    if not database or database == ":memory:":
        yield True
        return
    path = Path(f"{database}.{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# PostgreSQL: a batch is an id range. One UPDATE judges and moves the good blobs; what
# still holds a blob it could not move is then listed as a conflict.
_MOVABLE = r"""
    jsonb_typeof(metadata::jsonb -> 'compacted') = 'string'
    AND BASE64_CHECK
    AND (compacted IS NULL OR compacted = metadata::jsonb ->> 'compacted')
"""
# "Canonical base64": the text is exactly the base64 of what it decodes to (encode()
# wraps lines at 76 characters, hence the replace). decode() raises on a symbol outside
# the alphabet, which aborts the statement: the fast check lets it, and a range it
# aborts is judged again by the careful check, which runs decode() only on text a
# regex has already shown to be well-formed (CASE fixes the order of evaluation).
_CANONICAL = r"""replace(encode(decode(metadata::jsonb ->> 'compacted', 'base64'), 'base64'),
                 E'\n', '') = metadata::jsonb ->> 'compacted'"""
_FAST_CHECK = _CANONICAL
_CAREFUL_CHECK = (
    r"""CASE WHEN octet_length(metadata::jsonb ->> 'compacted') % 4 = 0
              AND (metadata::jsonb ->> 'compacted') ~ '^[A-Za-z0-9+/]*={0,2}$'
         THEN """
    + _CANONICAL
    + " ELSE false END"
)
_IN_RANGE = "id > :low AND id <= :high AND metadata::jsonb ? 'compacted'"
_MOVE_SQL = r"""
    UPDATE scenario_generations
    SET compacted = metadata::jsonb ->> 'compacted',
        chunk_count = COALESCE(
            chunk_count,
            CASE WHEN jsonb_typeof(metadata::jsonb -> 'chunk_count') = 'number'
                 THEN (metadata::jsonb ->> 'chunk_count')::int END),
        compacted_at = COALESCE(
            compacted_at,
            CASE WHEN metadata::jsonb ->> 'compacted_at'
                      ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$'
                 THEN (metadata::jsonb ->> 'compacted_at')::timestamptz END),
        metadata = metadata::jsonb - 'compacted'
    WHERE IN_RANGE AND (MOVABLE)
    RETURNING id
"""


def _sql(template: str, check: str) -> str:
    movable = _MOVABLE.replace("BASE64_CHECK", check)
    return template.replace("IN_RANGE", _IN_RANGE).replace("MOVABLE", movable)


_CHECKS = {False: _FAST_CHECK, True: _CAREFUL_CHECK}  # careful -> check
# the move; a dry run's verdicts (id, movable) on every blob in the range
_MOVE = {careful: text(_sql(_MOVE_SQL, check)) for careful, check in _CHECKS.items()}
_JUDGE = {
    careful: text(_sql("SELECT id, (MOVABLE) FROM scenario_generations WHERE IN_RANGE", check))
    for careful, check in _CHECKS.items()
}
# what still holds a blob after the move, judged by regex (it never raises), so that a
# blob committed meanwhile, still movable, is not reported as a conflict
_CONFLICTS = text(
    _sql(
        "SELECT id FROM scenario_generations WHERE IN_RANGE AND NOT (MOVABLE) ORDER BY id",
        _CAREFUL_CHECK,
    )
)
_DECODE_REFUSED = "22023"  # invalid_parameter_value: decode() met a symbol outside base64


_NEVER_ANALYZED = text(
    "SELECT relname FROM pg_class WHERE reltuples < 0 AND oid IN "
    "('scenario_generations'::regclass, 'generation_chunks'::regclass)"
)


def _relaxed_commit(connection: Connection) -> None:
    """Commit this transaction without waiting for the WAL flush.

    Only for the idempotent maintenance batches (migration, purge): a batch whose
    commit a server crash loses is rolled back whole and the next run does it again;
    nothing is acknowledged on the strength of that commit. Never for a compaction,
    whose commit Redis is trimmed after.
    """
    connection.execute(text("SET LOCAL synchronous_commit = off"))


def _has_legacy_blob(connection: Connection) -> Any:
    """A portable predicate: metadata is an object with a `compacted` key."""
    if connection.dialect.name == "postgresql":
        # a Laravel table may have `json` rather than `jsonb`: the cast works for both
        return cast_(GEN.c.metadata, JSONB).op("?")("compacted")
    if connection.dialect.name == "sqlite":
        # json_type is NULL only for a missing key; json_extract is NULL for a JSON null too
        return func.json_type(GEN.c.metadata, "$.compacted").is_not(None)
    return func.json_extract(GEN.c.metadata, "$.compacted").is_not(None)
