"""migrate-compacted-from-metadata: legacy `metadata.compacted` blobs moved into the
`compacted` column, batch by batch."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from genbuffer.db.repository import GenerationRow, Repository
from genbuffer.documents import Document
from genbuffer.operations.batches import Progress, id_ranges
from genbuffer.operations.exclusion import LeaseState, hold_lease

__all__ = ["MigrationResult", "migrate_compacted_from_metadata"]


class MigrationResult(Document):
    """What `migrate-compacted-from-metadata --json` prints (a dry run: `would_migrate`)."""

    ok: bool = True
    candidates: int
    migrated: int
    conflicts: list[int]
    dry_run: bool
    batches: int
    already_running: bool = False
    held_by: LeaseState | None = None  # already running: the run that holds the lease
    would_migrate: int = 0


def _migrated_values(row: GenerationRow) -> dict[str, Any] | None:
    """Column values that move a row's blob out of metadata; None on a conflict."""
    metadata = dict(row.metadata)
    blob = metadata.pop("compacted")
    if not isinstance(blob, str):
        return None
    try:  # canonical base64 only: what decodes and encodes back to the same text
        if base64.b64encode(base64.b64decode(blob, validate=True)).decode() != blob:
            return None
    except (binascii.Error, ValueError):
        return None
    if row.compacted is not None and row.compacted != blob:
        return None  # two different artifacts: leave the row for a person to look at
    values: dict[str, Any] = {"compacted": blob, "metadata": metadata}
    count = metadata.get("chunk_count")
    if row.chunk_count is None and isinstance(count, int) and not isinstance(count, bool):
        values["chunk_count"] = count
    stamp = metadata.get("compacted_at")
    if row.compacted_at is None and isinstance(stamp, str):
        with contextlib.suppress(ValueError):  # an unparsable stamp stays in metadata only
            values["compacted_at"] = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return values


def _migrate_in_sql(
    repository: Repository,
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
    check_lease: Callable[[], None],
) -> MigrationResult:
    """The PostgreSQL path: id ranges of ``batch_size``, each judged and moved in SQL.

    No count up front (a full scan): the candidates are what the ranges held. Rows
    added past the last id while the run goes are taken too.
    """
    legacy = repository.legacy
    migrated = batches = 0
    conflicts: list[int] = []
    for low, high in id_ranges(legacy.id_bounds, batch_size, follow_growth=True):
        check_lease()
        moved, found = legacy.move_range(low, high, dry_run)
        migrated += moved
        conflicts += found
        batches += 1
        if progress:
            progress(migrated + len(conflicts), 0)
    return MigrationResult(
        candidates=migrated + len(conflicts),
        migrated=0 if dry_run else migrated,
        would_migrate=migrated if dry_run else 0,
        conflicts=conflicts,
        dry_run=dry_run,
        batches=batches,
    )


def migrate_compacted_from_metadata(
    repository: Repository,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> MigrationResult:
    """Move each `metadata.compacted` blob into the `compacted` column, batch by batch.

    Idempotent (a moved row no longer matches) and resumable (each batch commits;
    a rerun picks up what is left). Rows with a conflicting or malformed blob are
    reported and left unchanged. A second run started meanwhile returns at once.
    """
    with hold_lease(repository.leases, "migrate-compacted-from-metadata") as lease:
        if not lease.acquired:
            return MigrationResult(
                candidates=0,
                migrated=0,
                conflicts=[],
                dry_run=dry_run,
                batches=0,
                already_running=True,
                held_by=lease.holder,
            )
        return _migrate(repository, batch_size, dry_run, progress, lease.check)


def _migrate(
    repository: Repository,
    batch_size: int,
    dry_run: bool,
    progress: Progress | None,
    check_lease: Callable[[], None],
) -> MigrationResult:
    if repository.legacy.in_sql:
        return _migrate_in_sql(repository, batch_size, dry_run, progress, check_lease)
    candidates = repository.legacy.count()
    migrated = batches = 0
    conflicts: list[int] = []
    after_id = 0
    while rows := repository.legacy.batch(after_id, batch_size):
        check_lease()
        after_id = rows[-1].id
        updates: dict[int, dict[str, Any]] = {}
        for row in rows:
            values = _migrated_values(row)
            if values is None:
                conflicts.append(row.id)
            else:
                updates[row.id] = values
        if updates and not dry_run:
            repository.save_many(updates)
        migrated += len(updates)
        batches += 1
        if progress:
            progress(migrated + len(conflicts), candidates)
    return MigrationResult(
        candidates=candidates,
        migrated=0 if dry_run else migrated,
        would_migrate=migrated if dry_run else 0,
        conflicts=conflicts,
        dry_run=dry_run,
        batches=batches,
    )
