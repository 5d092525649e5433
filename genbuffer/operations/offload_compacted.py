"""offload-compacted: move existing large base64 artifacts from their rows to the store.

Rows are taken in id order, ``batch_size`` at a time, each in a transaction of its
own with the row locked: the artifact is decoded, checked against the sha256
compaction recorded, uploaded to the object its sha256 names, and the row then
holds the object's URL and `metadata.offloaded`; `llm_response` is left as it is.
A run killed midway leaves every row either moved or untouched (an object uploaded
for a row that did not commit is an orphan, for purge-objects); running it again
goes on with the rest, and a row already moved is never selected again. One run at a
time (the job's lease): a second one started meanwhile returns at once, saying so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from typing import Any

from pydantic import Field

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.faults import FaultPlan
from genbuffer.objects.artifact import OffloadRecord, upload
from genbuffer.objects.offload import content_type
from genbuffer.objects.store import Store
from genbuffer.operations.exclusion import Lease, LeaseState, hold_lease

__all__ = ["OffloadCompactedResult", "offload_compacted"]


class OffloadCompactedResult(Document):
    """What `genbuf offload-compacted --json` prints."""

    ok: bool = True
    store: str
    dry_run: bool
    min_bytes: int
    candidates: int = 0  # base64 artifacts of at least min_bytes
    offloaded: int = 0
    bytes: int = 0  # of the artifacts moved (or, dry, that would move)
    stored_bytes: int = 0  # what the objects take in the store
    skipped: list[dict[str, Any]] = Field(default_factory=list)  # rows left as they are, why
    already_running: bool = False
    held_by: LeaseState | None = None  # already running: the run that holds the lease


def _base64_length(size: int) -> int:
    return (size + 2) // 3 * 4


def offload_compacted(
    repository: Repository,
    store: Store,
    *,
    compression: str,
    min_bytes: int,
    batch_size: int,
    dry_run: bool,
    progress: Callable[[int, int], None] = lambda done, total: None,
    faults: FaultPlan | None = None,
) -> OffloadCompactedResult:
    """Move every base64 artifact of at least ``min_bytes`` to ``store``."""
    result = OffloadCompactedResult(store=store.url, dry_run=dry_run, min_bytes=min_bytes)
    with hold_lease(repository.leases, "offload-compacted") as lease:
        if not lease.acquired:
            return result.model_copy(update={"already_running": True, "held_by": lease.holder})
        _offload_all(
            repository,
            store,
            result,
            lease,
            compression=compression,
            batch_size=batch_size,
            progress=progress,
            faults=faults or FaultPlan(),
        )
    return result


def _offload_all(
    repository: Repository,
    store: Store,
    result: OffloadCompactedResult,
    lease: Lease,
    *,
    compression: str,
    batch_size: int,
    progress: Callable[[int, int], None],
    faults: FaultPlan,
) -> None:
    """Every candidate row in id order, a batch read at a time, each moved on its own."""
    min_bytes, dry_run = result.min_bytes, result.dry_run
    length = _base64_length(min_bytes)
    with repository.transaction() as tx:
        result.candidates = tx.count_base64_artifacts(length)
    after = done = 0
    while True:
        with repository.transaction() as tx:
            batch = tx.base64_artifacts(length, after=after, limit=batch_size)
        if not batch:
            return
        for row_id, encoded_length in batch:
            after = row_id
            lease.check()
            if dry_run:
                result.offloaded += 1
                result.bytes += encoded_length * 3 // 4
            else:
                _offload_row(
                    repository,
                    compression,
                    store,
                    row_id,
                    min_bytes=min_bytes,
                    result=result,
                    faults=faults,
                )
            done += 1
            progress(done, result.candidates)


def _offload_row(
    repository: Repository,
    compression: str,
    store: Store,
    generation_id: int,
    *,
    min_bytes: int,
    result: OffloadCompactedResult,
    faults: FaultPlan,
) -> None:
    """Move one row's artifact, with the row locked; note why not when it cannot."""
    with repository.transaction() as tx:
        row = tx.lock_generation(generation_id)
        if row is None or row.compacted is None or ":" in row.compacted[:12]:
            return  # deleted or moved meanwhile
        metadata: dict[str, Any] = dict(row.metadata) if isinstance(row.metadata, dict) else {}
        try:
            data = base64.b64decode(row.compacted, validate=True)
        except (binascii.Error, ValueError):
            result.skipped.append({"id": generation_id, "reason": "compacted is not base64"})
            result.ok = False
            return
        digest = hashlib.sha256(data).hexdigest()
        if metadata.get("sha256") not in (None, digest):
            result.skipped.append(
                {"id": generation_id, "reason": "sha256 differs from the recorded one"}
            )
            result.ok = False
            return
        if len(data) < min_bytes:
            return
        record: OffloadRecord = upload(
            store,
            row.organization_id,
            generation_id,
            iter((data,)),
            sha256=digest,
            size=len(data),
            compression=compression,
            content_type=content_type(row.llm_response is not None, _is_utf8(data)),
        )
        faults.at("after_upload")  # the seam crash tests kill at: uploaded, not committed
        metadata.update(offloaded=record.to_metadata(), sha256=digest, bytes=len(data))
        tx.update_generation(generation_id, {"compacted": record.url, "metadata": metadata})
    result.offloaded += 1
    result.bytes += record.bytes
    result.stored_bytes += record.stored_bytes


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
