"""purge-chunks: chunk backups older than a cutoff deleted, batch by batch, once their
generation is compacted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.durations import parse_age
from genbuffer.operations.batches import Progress, id_ranges
from genbuffer.operations.exclusion import LeaseState, hold_lease

__all__ = ["PurgeResult", "purge_chunks"]


class PurgeResult(Document):
    """What `purge-chunks --json` prints (a dry run counts in `would_purge`, `purged` is 0)."""

    ok: bool = True
    older_than: str
    cutoff: datetime
    purged: int
    kept_not_compacted: int
    dry_run: bool
    batches: int
    already_running: bool = False
    held_by: LeaseState | None = None  # already running: the run that holds the lease
    would_purge: int = 0


def purge_chunks(
    repository: Repository,
    older_than: str,
    *,
    batch_size: int = 5000,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> PurgeResult:
    """Delete chunk backups older than ``older_than`` whose generation is compacted.

    Backups of a generation that is not compacted yet (or whose row is gone) are
    kept and counted. Each batch is its own short transaction. A second purge
    started while one runs returns at once with ``already_running`` (the job's lease).
    """
    cutoff = (now or datetime.now(UTC)) - parse_age(older_than, bare_days=True)
    with hold_lease(repository.leases, "purge-chunks") as lease:
        if not lease.acquired:
            return PurgeResult(
                older_than=older_than,
                cutoff=cutoff,
                purged=0,
                kept_not_compacted=0,
                dry_run=dry_run,
                batches=0,
                already_running=True,
                held_by=lease.holder,
            )
        return _purge(
            repository,
            older_than,
            cutoff,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=progress,
            check_lease=lease.check,
        )


def _purge(
    repository: Repository,
    older_than: str,
    cutoff: datetime,
    *,
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
    check_lease: Callable[[], None],
) -> PurgeResult:
    if dry_run:
        purgeable, kept = repository.retention.purgeable_chunks(cutoff)
        return PurgeResult(
            older_than=older_than,
            cutoff=cutoff,
            purged=0,
            would_purge=purgeable,
            kept_not_compacted=kept,
            dry_run=True,
            batches=0,
        )
    retention = repository.retention
    purged = batches = 0
    retention.analyze_if_never_analyzed()
    for low, high in id_ranges(lambda: retention.old_chunk_ids(cutoff), batch_size):
        check_lease()
        purged += retention.purge_range(cutoff, low, high)
        batches += 1
        if progress:
            progress(purged, 0)
    return PurgeResult(
        older_than=older_than,
        cutoff=cutoff,
        purged=purged,
        kept_not_compacted=retention.old_chunks_kept(cutoff),
        dry_run=dry_run,
        batches=batches,
    )
