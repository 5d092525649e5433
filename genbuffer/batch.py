"""compact-pending: compact every finished (or idle) buffer, for cron."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from itertools import islice

from pydantic import BaseModel

from genbuffer.buffer import GenerationBuffer
from genbuffer.compaction import (
    CompactionConfig,
    CompactionRequest,
    CompactionResult,
    assemble_and_persist,
)
from genbuffer.db.repository import Repository
from genbuffer.errors import DependencyUnavailable, GenbufferError
from genbuffer.keys import KeyParts

__all__ = ["DEFAULT_WORKERS", "PendingResult", "compact_pending"]

Progress = Callable[[int, int], None]
ACK_BATCH = 100  # acknowledgements sent per round trip (each only after its commit)
# Generations compacted at once. A compaction mostly waits (Redis, the row lock, the
# UPDATE, the commit's WAL flush), so a few in flight overlap those waits and let
# PostgreSQL flush several commits at once. SQLite writes one at a time: 1 there.
DEFAULT_WORKERS = 4


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
    workers: int = DEFAULT_WORKERS,
) -> PendingResult:
    """Compact each buffer whose stream is finished, or idle for longer than ``idle``.

    A generation that fails is reported and the run goes on; an outage stops it
    (exit 3). Quarantined buffers are skipped. One run at a time (a job lock).
    ``workers`` generations are compacted at once (each in its own transaction).
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
        compacted, failures = _compact_all(
            candidates,
            buffer=buffer,
            repository=repository,
            config=config,
            delete=delete,
            dry_run=dry_run,
            workers=workers,
            progress=progress,
        )
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


def _compact_all(
    candidates: list[KeyParts],
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
    delete: bool,
    dry_run: bool,
    workers: int,
    progress: Progress | None,
) -> tuple[int, list[dict[str, object]]]:
    """Compact ``candidates``, up to ``workers`` at once; (compacted, failures by id).

    Results are handled here, in order of completion: acknowledgements (each after
    its own commit) go ACK_BATCH per round trip. On an outage no new compaction
    starts; those in flight finish, are acknowledged, and the outage is raised.
    """
    if repository.engine.dialect.name == "sqlite":
        workers = 1

    def run(parts: KeyParts) -> CompactionResult:
        request = CompactionRequest(
            parts.organization_id,
            parts.generation_id,
            parts.scenario_id,
            delete=delete,
            dry_run=dry_run,
            acknowledge=False,
        )
        return assemble_and_persist(request, buffer=buffer, repository=repository, config=config)

    compacted, done = 0, 0
    failed: list[tuple[int, str]] = []  # (generation id, message)
    acks: list[tuple[str, str, int]] = []  # committed, trimmed a batch at a time
    outage: DependencyUnavailable | None = None
    queue = iter(candidates)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compact") as pool:
        running = {pool.submit(run, parts): parts for parts in islice(queue, workers)}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                parts = running.pop(future)
                done += 1
                try:
                    result = future.result()
                except DependencyUnavailable as exc:
                    outage = outage or exc
                except GenbufferError as error:
                    failed.append((parts.generation_id, error.message))
                else:
                    compacted += 1
                    if (
                        delete
                        and not dry_run
                        and result.stream_id
                        and (result.ok or result.persisted)
                    ):
                        acks.append((result.key, result.stream_id, result.stream_end))
                if progress:
                    progress(done, len(candidates))
                if outage is None and (following := next(queue, None)) is not None:
                    running[pool.submit(run, following)] = following
            if len(acks) >= ACK_BATCH:
                buffer.acknowledge_many(acks, delete=True)
                acks = []
    buffer.acknowledge_many(acks, delete=True)
    if outage is not None:
        raise outage
    return compacted, [{"generation_id": gen, "error": message} for gen, message in sorted(failed)]
