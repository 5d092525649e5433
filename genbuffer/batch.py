"""compact-pending: compact every finished (or idle) buffer, for cron."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from genbuffer.buffer import GenerationBuffer
from genbuffer.compaction import CompactionConfig, CompactionRequest, assemble_and_persist
from genbuffer.db.repository import Repository
from genbuffer.errors import DependencyUnavailable, GenbufferError

__all__ = ["PendingResult", "compact_pending"]

Progress = Callable[[int, int], None]
ACK_BATCH = 100  # acknowledgements sent per round trip (each only after its commit)


class PendingResult(BaseModel):
    """What `compact-pending --json` prints."""

    buffers: int
    eligible: int
    compacted: int
    failed: int
    skipped_quarantined: int
    skipped_active: int
    dry_run: bool
    already_running: bool = False
    failures: list[dict[str, object]] = []


def compact_pending(
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
    *,
    idle: timedelta | None = None,
    limit: int | None = None,
    delete: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> PendingResult:
    """Compact each buffer whose stream is finished, or idle for longer than ``idle``.

    A generation that fails is reported and the run goes on; an outage stops it
    (exit 3). Quarantined buffers are skipped. One run at a time (a job lock).
    """
    with repository.job_lock("compact-pending") as acquired:
        if not acquired:
            return PendingResult(
                buffers=0,
                eligible=0,
                compacted=0,
                failed=0,
                skipped_quarantined=0,
                skipped_active=0,
                dry_run=dry_run,
                already_running=True,
            )
        cutoff = None if idle is None else (now or datetime.now(UTC)) - idle
        candidates, buffers, quarantined, active = [], 0, 0, 0
        for parts, meta in buffer.pending_buffers():
            buffers += 1
            if "quarantined_at" in meta:
                quarantined += 1
            elif "finished_at" in meta or _idle_since(meta.get("last_chunk_at"), cutoff):
                candidates.append(parts)
            else:
                active += 1
        candidates = candidates[:limit] if limit is not None else candidates
        compacted, failures = 0, []
        acks: list[tuple[str, str, int]] = []  # committed, trimmed a batch at a time
        for done, parts in enumerate(candidates, start=1):
            request = CompactionRequest(
                parts.organization_id,
                parts.generation_id,
                parts.scenario_id,
                delete=delete,
                dry_run=dry_run,
                acknowledge=False,
            )
            try:
                result = assemble_and_persist(
                    request, buffer=buffer, repository=repository, config=config
                )
                compacted += 1
                if delete and not dry_run and result.stream_id and (result.ok or result.persisted):
                    acks.append((result.key, result.stream_id, result.stream_end))
                if len(acks) == ACK_BATCH:
                    buffer.acknowledge_many(acks, delete=True)
                    acks = []
            except DependencyUnavailable:
                raise
            except GenbufferError as error:
                failures.append({"generation_id": parts.generation_id, "error": error.message})
            if progress:
                progress(done, len(candidates))
        buffer.acknowledge_many(acks, delete=True)
    return PendingResult(
        buffers=buffers,
        eligible=len(candidates),
        compacted=compacted,
        failed=len(failures),
        skipped_quarantined=quarantined,
        skipped_active=active,
        dry_run=dry_run,
        failures=failures,
    )


def _idle_since(last_chunk_at: str | None, cutoff: datetime | None) -> bool:
    if cutoff is None or last_chunk_at is None:
        return False
    try:
        stamp = datetime.fromisoformat(last_chunk_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)) < cutoff
