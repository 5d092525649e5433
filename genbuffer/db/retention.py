"""The retention purge of chunk backups (`generation_chunks`), batch by id range."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select, text

from genbuffer.db.engine import database_errors
from genbuffer.db.rows import CHUNKS, GEN

__all__ = ["Retention", "relaxed_commit"]

_NEVER_ANALYZED = text(
    "SELECT relname FROM pg_class WHERE reltuples < 0 AND oid IN "
    "('scenario_generations'::regclass, 'generation_chunks'::regclass)"
)
_ANALYZE = text("ANALYZE scenario_generations, generation_chunks")
_RELAXED_COMMIT = text("SET LOCAL synchronous_commit = off")


def relaxed_commit(connection: Connection) -> None:
    """Commit this transaction without waiting for the WAL flush (PostgreSQL).

    Only for idempotent maintenance batches (migration, purge): a batch whose
    commit a server crash loses is rolled back whole and the next run does it again;
    nothing is acknowledged on the strength of that commit. Never for a compaction,
    whose commit Redis is trimmed after.
    """
    connection.execute(_RELAXED_COMMIT)


class Retention:
    """Counting and deleting old backups of compacted generations."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

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
        """PostgreSQL: ANALYZE both tables when either has no statistics; True if it ran.

        Without statistics (a table just created, restored or truncated) the planner
        joins them with nested loops of bitmap scans, far slower per purge batch.
        ANALYZE samples, so it stays well under a second on a large table.
        """
        if self.engine.dialect.name != "postgresql":
            return False
        with database_errors(self.url), self.engine.begin() as connection:
            fresh = connection.execute(_NEVER_ANALYZED).first()
            if fresh is not None:
                connection.execute(_ANALYZE)
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

    def purge_range(self, cutoff: datetime, low: int, high: int) -> int:
        """Delete the purgeable backups with ``low < id <= high``, in one transaction.

        An id range rather than ORDER BY … LIMIT, so that each batch is one
        primary-key range scan whatever the planner's statistics say, and no batch
        walks again over rows an earlier one passed.
        """
        compacted = (
            select(GEN.c.id)
            .where(GEN.c.id == CHUNKS.c.generation_id, GEN.c.compacted_at.is_not(None))
            .exists()
        )
        statement = delete(CHUNKS).where(
            CHUNKS.c.id > low, CHUNKS.c.id <= high, CHUNKS.c.created_at < cutoff, compacted
        )
        with database_errors(self.url), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                relaxed_commit(connection)  # a lost purge commit is redone next run
            return int(connection.execute(statement).rowcount)
