"""The statements of one compaction, inside the transaction that holds its row lock."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from genbuffer.db.artifact import save_artifact, save_offloaded
from genbuffer.db.rows import (
    CHUNKS,
    GEN,
    HISTORY,
    ISSUES,
    LEDGER,
    LOCK_ROW,
    GenerationRow,
    lock_rows,
    new_id,
    prepared,
    to_row,
)

__all__ = ["BACKUP_BATCH", "URL_MAX", "Transaction"]

URL_MAX = 2048  # an object URL is shorter; a longer `compacted` is an artifact's base64

BACKUP_BATCH = 1000  # chunks per executemany (SQLite, MySQL) …
BACKUP_BATCH_POSTGRES = 10_000  # … or per unnest() statement (PostgreSQL) …
BACKUP_BATCH_BYTES = 2 * 1024 * 1024  # … or fewer, once they weigh this much
# psycopg's own placeholders (exec_driver_sql): %b sends the chunks as one binary
# bytea[], which neither side has to escape or parse as text
_BACKUP_UNNEST = """
    INSERT INTO generation_chunks (organization_id, generation_id, seq, content)
    SELECT %(organization_id)s, %(generation_id)s, %(first_seq)s + backup.position - 1,
           backup.content
    FROM unnest(%(contents)b::bytea[]) WITH ORDINALITY AS backup(content, position)
    ON CONFLICT (generation_id, seq) DO NOTHING
"""
# Built once: the ledger's INSERT, its values bound (a statement built from the values
# each time cost SQLAlchemy a new cache key and coercions a compaction: ~1 ms of CPU)
_RECORD = insert(LEDGER)
_HISTORY_COPIED = (
    "organization_id",
    "compacted",
    "llm_response",
    "metadata",
    "chunk_count",
    "compacted_at",
    "compacted_by",
)


class Transaction:
    """The statements that run inside one database transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.commit_check: Callable[[], bool] | None = None

    def rollback(self) -> None:
        """End the transaction now, writing nothing (the block may go on reading)."""
        self.connection.rollback()

    def verify_commit_with(self, check: Callable[[], bool]) -> None:
        """If the COMMIT fails with its outcome unknown (the connection died), ask
        ``check`` on a fresh connection whether it was applied; yes: no error."""
        self.commit_check = check

    def lock_generation(self, generation_id: int) -> GenerationRow | None:
        """Read a generation row and lock it until the transaction ends."""
        found: Any
        if self.connection.dialect.name == "postgresql":  # compiled once (db.rows.Prepared)
            lock = prepared(LOCK_ROW, self.connection)
            found = lock.execute(self.connection, {"id": generation_id})
        else:  # (SQLite's and MySQL's dates and JSON come back through SQLAlchemy's types)
            found = self.connection.execute(LOCK_ROW, {"id": generation_id}).first()
        return None if found is None else to_row(found)

    def lock_generations(self, generation_ids: Sequence[int]) -> dict[int, GenerationRow]:
        """Read generation rows and lock them until the transaction ends, in id order (two
        transactions locking some of the same rows never wait on each other in a
        circle); the rows found, by id."""
        ordered = sorted(set(generation_ids))
        if self.connection.dialect.name != "postgresql":
            locked = ((id_, self.lock_generation(id_)) for id_ in ordered)
            return {id_: row for id_, row in locked if row is not None}
        lock = prepared(lock_rows(), self.connection)  # one round trip for them all
        found = lock.fetch_all(self.connection, {"ids": ordered})
        return {row.id: row for row in map(to_row, found)}

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
        record: dict[str, Any] | None = None,
    ) -> None:
        """Write a compacted artifact and the row's other compaction columns (see db.artifact),
        and ``record``, the compaction ledger's row (PostgreSQL: in the same statement).

        ``llm_response``: "json" (parse the artifact), "null", or "keep" (leave it).
        """
        save_artifact(
            self.connection,
            generation_id,
            encoded,
            llm_response=llm_response,
            values=values,
            record=record,
        )

    def base64_artifacts(
        self, min_length: int, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, int]]:
        """(id, length of `compacted`) of rows whose `compacted` is base64 of at least
        ``min_length`` characters, by id after ``after``. base64 never holds ':' and every
        URL does within its first characters: the prefix tells an offloaded row apart
        without reading a large value whole."""
        query = (
            select(GEN.c.id, func.length(GEN.c.compacted))
            .where(
                GEN.c.id > after,
                GEN.c.compacted.is_not(None),
                func.length(GEN.c.compacted) >= min_length,
                func.substr(GEN.c.compacted, 1, 12).not_like("%:%"),
            )
            .order_by(GEN.c.id)
            .limit(limit)
        )
        return [(int(row_id), int(length)) for row_id, length in self.connection.execute(query)]

    def count_base64_artifacts(self, min_length: int) -> int:
        """How many rows base64_artifacts(min_length) would list in all."""
        query = select(func.count()).where(
            GEN.c.compacted.is_not(None),
            func.length(GEN.c.compacted) >= min_length,
            func.substr(GEN.c.compacted, 1, 12).not_like("%:%"),
        )
        return int(self.connection.execute(query).scalar_one())

    def object_urls(self, generation_id: int | None = None, *, page: int = 1000) -> Iterator[str]:
        """Every URL a row's `compacted`, or an artifact kept in its history, holds (of one
        generation, or of all), whatever row names it: a row the app copied names its
        source's object. Read ``page`` rows at a time. Only the first URL_MAX + 1
        characters of a value are read (a longer one is no URL), and base64 is told apart
        by its first characters (it never holds ':'), so a large artifact is never read
        whole."""
        queries = []
        for column, owner in (
            (GEN.c.compacted, GEN.c.id),
            (HISTORY.c.compacted, HISTORY.c.generation_id),
        ):
            query = select(func.substr(column, 1, URL_MAX + 1)).where(
                func.substr(column, 1, 12).like("%:%")
            )
            if generation_id is not None:
                query = query.where(owner == generation_id)
            queries.append(query)
        for query in queries:
            found = self.connection.execution_options(yield_per=page).execute(query)
            yield from (url for url in found.scalars() if url and len(url) <= URL_MAX)

    def save_offloaded(
        self,
        generation_id: int,
        url: str,
        *,
        llm_response: str,
        json_text: str | None,
        values: dict[str, Any],
    ) -> None:
        """Point the row at its offloaded artifact's URL (see db.artifact.save_offloaded)."""
        save_offloaded(
            self.connection,
            generation_id,
            url,
            llm_response=llm_response,
            json_text=json_text,
            values=values,
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
        return new_id(result)

    def record_compaction(self, values: dict[str, Any]) -> None:
        """Append one outcome to the compaction ledger (`generation_compactions`)."""
        self.connection.execute(_RECORD, values)

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

        Chunks may be views; a batch at a time is copied for the driver. PostgreSQL
        takes a batch as one statement, the chunks bound as one binary bytea[]
        (executemany sends a statement per chunk, ~30 us each); the others as an
        executemany of INSERT … ON CONFLICT DO NOTHING (IGNORE on MySQL).
        """
        postgres = self.connection.dialect.name == "postgresql"
        statement = None if postgres else self._backup_insert()
        seq = first_seq
        count = BACKUP_BATCH_POSTGRES if postgres else BACKUP_BATCH
        for batch in _copied_batches(chunks, count, BACKUP_BATCH_BYTES):
            if statement is None:
                self.connection.exec_driver_sql(
                    _BACKUP_UNNEST,
                    {
                        "organization_id": organization_id,
                        "generation_id": generation_id,
                        "first_seq": seq,
                        "contents": batch,
                    },
                )
            else:
                rows = [
                    {
                        "organization_id": organization_id,
                        "generation_id": generation_id,
                        "seq": seq + offset,
                        "content": content,
                    }
                    for offset, content in enumerate(batch)
                ]
                self.connection.execute(statement, rows)
            seq += len(batch)

    def _backup_insert(self) -> Any:
        """INSERT … ON CONFLICT DO NOTHING (IGNORE on MySQL), for executemany."""
        if self.connection.dialect.name == "sqlite":
            from sqlalchemy.dialects import sqlite  # noqa: PLC0415  (the dialect in use only)

            return sqlite.insert(CHUNKS).on_conflict_do_nothing()
        return insert(CHUNKS).prefix_with("IGNORE")  # MySQL / MariaDB


def _copied_batches(
    chunks: Iterable[bytes | memoryview], count: int, size_cap: int
) -> Iterator[list[bytes]]:
    """The chunks as bytes, in lists of up to ``count`` chunks or ``size_cap`` bytes."""
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(bytes(chunk))
        size += len(chunk)
        if len(batch) == count or size >= size_cap:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
