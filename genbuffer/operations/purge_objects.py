"""purge-objects: remove objects no row points at (uploads whose compaction never committed).

An offloading compaction uploads its object before its row commits, so a crash in
between leaves an orphan: an object no `compacted` (nor a kept history artifact)
names. Orphans older than a grace period are deleted.

"Names" compares canonical locations (genbuffer.objects.location), never URL
strings: rows written under ``file:///srv/objs`` name the objects of a store later
spelled ``file://localhost/srv/objs`` or ``file:///srv//objs``. Every row and
history entry counts, whichever generation it is (a row the app copied with
``insert … select`` names its source's object). What rows name is read once, before
the store is listed; when rows name objects but none in this store while the store
holds objects to delete, the store is not the one the rows were written to (a
setting changed): nothing is deleted and the run is a usage error naming both.

Each orphan is deleted with its generation's row locked, the lock every compaction
of that generation holds from its upload to its commit, and what that generation's
row and history name is read again under the lock: a compaction that is writing the
same object meanwhile either committed first (the object is referenced, and kept) or
starts after the delete (and uploads the object again). Objects genbuf did not name,
and in a file:// store paths that leave its directory through a symlink, are left alone.
One run at a time (the job's lease): a second one started meanwhile returns at once,
saying so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.errors import UsageError
from genbuffer.objects.artifact import OBJECT_PATH
from genbuffer.objects.location import Location, object_location
from genbuffer.objects.store import Store, StoredObject
from genbuffer.operations.exclusion import LeaseState, hold_lease

__all__ = ["PurgeObjectsResult", "References", "purge_objects"]

ROOTS_SHOWN = 3  # the other stores a refusal names
NAME_SEGMENTS = 3  # a genbuf name: org-<org>/gen-<gen>/<sha256>[.zst]


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


@dataclass
class References:
    """What rows and history entries name, sorted against one store."""

    store: Location
    here: set[str] = field(default_factory=set)  # paths in the store that something names
    elsewhere: Counter[str] = field(default_factory=Counter)  # other stores, by their URL

    def add(self, urls: Iterable[str]) -> None:
        """Sort these URLs: a genbuf object in this store, in another one, or neither."""
        for url in urls:
            location = object_location(url)
            if location is None:
                continue
            key = location.key_in(self.store)
            if key is not None:
                self.here.add(key)
                continue
            root, name = location.segments[:-NAME_SEGMENTS], location.segments[-NAME_SEGMENTS:]
            if OBJECT_PATH.match("/".join(name)):
                self.elsewhere[Location(location.scheme, location.authority, root).url] += 1

    def names(self, path: str) -> bool:
        """Whether something names the object at ``path``."""
        return path in self.here

    def check_store(self) -> None:
        """A usage error when rows name genbuf objects, none of them in this store."""
        if self.here or not self.elsewhere:
            return
        others = ", ".join(
            f"{url} ({count})" for url, count in self.elsewhere.most_common(ROOTS_SHOWN)
        )
        raise UsageError(
            f"purge-objects deletes nothing in {self.store.url}: rows name objects in "
            f"{others} but none in it, so every object in it would look orphaned",
            hint="set GENERATION_OFFLOAD_URL to the store the rows were written to "
            "(genbuf config show); a new store is purged once a compaction has written to it",
        )


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
    """Delete (or, dry, count) the orphans older than ``grace``; what rows name is read
    ``batch_size`` rows at a time. One run at a time (the job's lease): a second one
    started meanwhile returns at once, saying so."""
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
    """Read what rows name, then list the store and delete the orphans, checking the
    lease every ``batch_size`` objects."""
    references = References(store.location)
    with repository.transaction() as tx:
        references.add(tx.object_urls(page=batch_size))
    for stored in store.objects():
        result.objects += 1
        progress(result.objects, 0)
        if result.objects % batch_size == 0:
            check_lease()
        match = OBJECT_PATH.match(stored.path)
        if match is None or not store.contains(stored.path):
            result.foreign += 1
        elif references.names(stored.path):
            result.referenced += 1
        elif stored.last_modified > cutoff:
            result.young += 1
        else:
            references.check_store()  # before the first delete, not after
            _purge_one(repository, store, stored, int(match.group(2)), result)


def _purge_one(
    repository: Repository,
    store: Store,
    stored: StoredObject,
    generation_id: int,
    result: PurgeObjectsResult,
) -> None:
    """Delete one orphan with its generation's row locked, unless that generation's row
    or history names it by then (a compaction committed meanwhile)."""
    result.orphans += 1
    if result.dry_run:
        return
    with repository.transaction() as tx:
        tx.lock_generation(generation_id)  # a compaction of this generation is done or waits
        again = References(store.location)
        again.add(tx.object_urls(generation_id))
        if again.names(stored.path):
            result.orphans -= 1
            result.referenced += 1
            return
        store.delete([stored.path])
    result.deleted += 1
    result.deleted_bytes += stored.size
