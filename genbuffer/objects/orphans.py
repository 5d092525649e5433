"""purge-objects: remove objects no row points at (uploads whose compaction never committed).

An offloading compaction uploads its object before its row commits, so a crash in
between leaves an orphan: an object no `compacted` (nor a kept history artifact)
names. Orphans older than a grace period are deleted in batches. Each one is
deleted with its generation's row locked, the lock every compaction of that
generation holds from its upload to its commit: a compaction that is writing the
same object meanwhile either committed first (the object is referenced, and kept)
or starts after the delete (and uploads the object again). One run at a time (the
job's lease): a second one started meanwhile returns at once, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.exclusion import LeaseState, hold_lease
from genbuffer.objects.artifact import OBJECT_PATH
from genbuffer.objects.store import Store, StoredObject

__all__ = ["PurgeObjectsResult", "purge_objects"]


class PurgeObjectsResult(Document):
    """What `genbuf purge-objects --json` prints."""

    ok: bool = True
    store: str
    dry_run: bool
    grace_seconds: float
    objects: int = 0  # seen under the store's URL
    referenced: int = 0  # a row or its history points at them
    young: int = 0  # younger than the grace period: an upload may be committing
    foreign: int = 0  # names genbuf does not write: left alone
    orphans: int = 0  # older than the grace period, referenced by nothing
    deleted: int = 0
    deleted_bytes: int = 0
    already_running: bool = False
    held_by: LeaseState | None = None  # already running: the run that holds the lease


def purge_objects(
    repository: Repository,
    store: Store,
    *,
    grace: timedelta,
    batch_size: int,
    dry_run: bool,
    progress: Callable[[int, int], None] = lambda done, total: None,
    now: datetime | None = None,
) -> PurgeObjectsResult:
    """Delete (or, dry, count) the orphans older than ``grace``, ``batch_size`` at a time."""
    cutoff = (now or datetime.now(UTC)) - grace
    result = PurgeObjectsResult(
        store=store.url, dry_run=dry_run, grace_seconds=grace.total_seconds()
    )
    with hold_lease(repository.leases, "purge-objects") as lease:
        if not lease.acquired:
            return result.model_copy(update={"already_running": True, "held_by": lease.holder})
        _purge_all(
            repository,
            store,
            result,
            cutoff=cutoff,
            batch_size=batch_size,
            progress=progress,
            check_lease=lease.check,
        )
    return result


def _purge_all(
    repository: Repository,
    store: Store,
    result: PurgeObjectsResult,
    *,
    cutoff: datetime,
    batch_size: int,
    progress: Callable[[int, int], None],
    check_lease: Callable[[], None],
) -> None:
    """List the store, a batch of candidates at a time, checking the lease between."""
    batch: list[tuple[StoredObject, int]] = []
    for stored in store.objects():
        result.objects += 1
        match = OBJECT_PATH.match(stored.path)
        if match is None:
            result.foreign += 1
        elif stored.last_modified > cutoff:
            result.young += 1
        else:
            batch.append((stored, int(match.group(2))))
        if len(batch) >= batch_size:
            check_lease()
            _purge_batch(repository, store, batch, result)
            batch = []
        progress(result.objects, 0)
    check_lease()
    _purge_batch(repository, store, batch, result)


def _purge_batch(
    repository: Repository,
    store: Store,
    batch: list[tuple[StoredObject, int]],
    result: PurgeObjectsResult,
) -> None:
    """Sort one batch into referenced and orphaned objects; delete the orphans."""
    if not batch:
        return
    urls = {store.url_of(stored.path): (stored, gen) for stored, gen in batch}
    with repository.transaction() as tx:
        referenced = tx.referenced_urls((gen for _, gen in batch), urls)
    result.referenced += len(referenced)
    for url, (stored, gen) in urls.items():
        if url in referenced:
            continue
        result.orphans += 1
        if result.dry_run:
            continue
        with repository.transaction() as tx:
            tx.lock_generation(gen)  # a compaction of this generation is done or waits
            if tx.referenced_urls([gen], [url]):
                result.orphans -= 1
                result.referenced += 1
                continue
            store.delete([stored.path])
        result.deleted += 1
        result.deleted_bytes += stored.size
