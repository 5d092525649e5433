"""purge-chunks: old backups of compacted generations deleted, batch by batch; the
tables analyzed first where they have no statistics (PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from genbuffer.db.retention import _NEVER_ANALYZED
from genbuffer.db.rows import CHUNKS
from genbuffer.operations.purge_chunks import purge_chunks
from tests.conftest import Stack
from tests.helpers import compact


def _age_backups(stack: Stack, days: int) -> None:
    with stack.repository.transaction() as tx:
        tx.connection.execute(
            update(CHUNKS).values(created_at=datetime.now(UTC) - timedelta(days=days))
        )


def test_purge_removes_old_backups_of_compacted_generations_only(stack: Stack) -> None:
    """Old backups of compacted generations go; others, and recent ones, stay."""
    gen = stack.repository.create_generation(2)
    stack.buffer.push_many(2, gen, [b"a", b"b", b"c"])
    compact(stack, 2, gen)
    pending = stack.repository.create_generation(2)
    with stack.repository.transaction() as tx:  # a backup the producer app wrote itself
        tx.backup_chunks(2, pending, 0, [b"not compacted yet"])
    assert purge_chunks(stack.repository, "7d").purged == 0  # all recent
    _age_backups(stack, 10)
    dry = purge_chunks(stack.repository, "7d", dry_run=True)
    assert (dry.purged, dry.would_purge, dry.kept_not_compacted) == (0, 3, 1)
    assert len(stack.repository.backups(gen)) == 3
    real = purge_chunks(stack.repository, "7d", batch_size=2)
    assert (real.purged, real.batches, real.kept_not_compacted) == (3, 2, 1)
    assert stack.repository.backups(gen) == []
    assert stack.repository.backups(pending) == [b"not compacted yet"]


def test_purge_analyzes_tables_that_have_no_statistics(servers: Stack) -> None:
    """A purge on tables never analysed (new, restored, truncated) analyses them first,
    once: without statistics PostgreSQL picks nested-loop plans ~50x slower."""
    repository = servers.repository

    def never_analyzed() -> list[str]:
        with repository.transaction() as tx:
            return sorted(tx.connection.execute(_NEVER_ANALYZED).scalars())

    assert never_analyzed() == ["generation_chunks", "scenario_generations"]  # new tables
    assert purge_chunks(repository, "7d").purged == 0
    assert never_analyzed() == []
    assert repository.retention.analyze_if_never_analyzed() is False  # the second time: nothing


def test_analyze_is_postgresql_only(embedded: Stack) -> None:
    """Elsewhere there is nothing to analyse first."""
    assert embedded.repository.retention.analyze_if_never_analyzed() is False
