"""compact-pending: compact every finished (or idle) buffer, for cron."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import NamedTuple

from pydantic import Field

from genbuffer.batching import Progress
from genbuffer.compaction import (
    CompactionConfig,
    CompactionRequest,
    CompactionResult,
    assemble_and_persist,
)
from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.errors import DependencyUnavailable, GenbufferError, GenerationNotFound, LeaseLost
from genbuffer.exclusion import LeaseState, hold_lease
from genbuffer.idleness import quiet_for
from genbuffer.prefixes import check_prefix
from genbuffer.redis import FoundBuffer, GenerationBuffer
from genbuffer.redis.meta import BufferMeta, Observation
from genbuffer.states import BufferState, Selected

__all__ = [
    "AT_RISK",
    "DEFAULT_WORKERS",
    "FINISHED",
    "IDLE",
    "CompactedGeneration",
    "GenerationIssues",
    "PendingResult",
    "Selection",
    "compact_pending",
    "select_buffers",
]

# why a scan chose a buffer: its stream is finished, it has been idle for --idle, or
# its chunks expire within GENERATION_EXPIRY_MARGIN (idle or not: compacted as a
# provisional artifact, which chunks arriving later continue)
FINISHED = Selected.FINISHED
IDLE = Selected.IDLE
AT_RISK = Selected.AT_RISK

ACK_BATCH = 100  # acknowledgements sent per round trip (each only after its commit)
OBSERVE_PAGE = 500  # buffers whose looks are recorded per round trip
# Generations compacted at once. A compaction mostly waits (Redis, the row lock, the
# UPDATE, the commit's WAL flush), so a few in flight overlap those waits and let
# PostgreSQL flush several commits at once. SQLite writes one at a time: 1 there.
DEFAULT_WORKERS = 4


class CompactedGeneration(Document):
    """A generation a batch compacted, by its ids."""

    organization_id: int
    generation_id: int


class GenerationIssues(Document):
    """A generation whose validation found issues in a batch (compacted or failed)."""

    organization_id: int
    generation_id: int
    validation_id: int | None  # the issue row (none when none was written: a dry run, or
    # a buffer whose chunks were all compacted before, validated again and left as it was)
    codes: list[str]  # its issues' codes, each once


class PendingResult(Document):
    """What `compact-pending --json` prints (a dry run counts in `would_compact`)."""

    ok: bool = True
    buffers: int
    eligible: int
    compacted: int
    failed: int
    skipped_quarantined: int
    skipped_active: int
    skipped_orphaned: int = 0
    skipped_empty: int = 0
    at_risk: int = 0  # chosen because their chunks expire within GENERATION_EXPIRY_MARGIN
    dry_run: bool
    already_running: bool = False
    held_by: LeaseState | None = None  # already running: the run that holds the lease
    would_compact: int = 0
    # buffers whose every chunk the row already held (a run killed between its commit and
    # the buffer's removal): removed, nothing written; not counted in `compacted`
    already_persisted: int = 0
    failures: list[dict[str, object]] = Field(default_factory=list)
    orphaned: list[dict[str, object]] = Field(default_factory=list)
    # which generations `compacted` counts (in a dry run, `would_compact`)
    compacted_generations: list[CompactedGeneration] = Field(default_factory=list)
    # every generation whose validation found issues, compacted or failed
    issues: list[GenerationIssues] = Field(default_factory=list)


class _Done(NamedTuple):
    """What a batch of compactions did: counts, and which generations."""

    compacted: int
    already_persisted: int
    failures: list[dict[str, object]]
    orphans: list[dict[str, object]]
    generations: list[CompactedGeneration]  # those `compacted` counts
    issues: list[GenerationIssues]


@dataclass
class Selection:
    """The scan's verdict: what to compact, and what was skipped and why."""

    # (buffer, why: FINISHED, IDLE or AT_RISK)
    candidates: list[tuple[FoundBuffer, str]] = field(default_factory=list)
    buffers: int = 0
    quarantined: int = 0
    orphaned: int = 0
    active: int = 0
    empty: int = 0


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
    regeneration: str | None = None,
    expiry_margin: timedelta | None = None,
) -> PendingResult:
    """Compact each buffer whose stream is finished, or idle for longer than ``idle``,
    or whose chunks expire within ``expiry_margin`` (idle or not).

    Every buffer under the prefix is considered, with or without a meta hash. A
    generation that fails is reported and the run goes on (exit 1); an outage stops
    it (exit 3). Quarantined and orphaned buffers are skipped; a buffer found to have
    no row is reported once, then set aside as orphaned. One run at a time (the job's
    lease: genbuffer.exclusion). ``workers`` generations are compacted at once, each in
    its own transaction.
    """
    with hold_lease(repository.leases, "compact-pending") as lease:
        if not lease.acquired:
            return PendingResult(
                buffers=0,
                eligible=0,
                compacted=0,
                failed=0,
                skipped_quarantined=0,
                skipped_active=0,
                dry_run=dry_run,
                already_running=True,
                held_by=lease.holder,
            )
        chosen = select_buffers(
            buffer, idle, now or datetime.now(UTC), dry_run=dry_run, expiry_margin=expiry_margin
        )
        if chosen.buffers == 0:
            check_prefix(buffer)  # nothing here, but buffers elsewhere: say so, exit 1
        candidates = chosen.candidates[:limit] if limit is not None else chosen.candidates
        done = _compact_all(
            candidates,
            buffer=buffer,
            repository=repository,
            config=config,
            delete=delete,
            dry_run=dry_run,
            workers=workers,
            progress=progress,
            regeneration=regeneration,
            check_lease=lease.check,
        )
    return PendingResult(
        ok=not done.failures and not done.orphans,
        buffers=chosen.buffers,
        eligible=len(candidates),
        compacted=0 if dry_run else done.compacted,
        would_compact=done.compacted if dry_run else 0,
        already_persisted=done.already_persisted,
        failed=len(done.failures),
        skipped_quarantined=chosen.quarantined,
        skipped_active=chosen.active,
        skipped_orphaned=chosen.orphaned,
        skipped_empty=chosen.empty,
        at_risk=sum(1 for _, why in candidates if why == AT_RISK),
        dry_run=dry_run,
        failures=done.failures,
        orphaned=done.orphans,
        compacted_generations=done.generations,
        issues=done.issues,
    )


def select_buffers(
    buffer: GenerationBuffer,
    idle: timedelta | None,
    now: datetime,
    *,
    dry_run: bool,
    expiry_margin: timedelta | None = None,
) -> Selection:
    """Scan every buffer and sort it: finished, idle or about to expire (compact), or
    skipped and why. Idle is ``genbuffer.idleness``'s rule; outside a dry run this
    records the look at each open buffer (the next run judges by it), a page of
    buffers per round trip."""
    chosen = Selection()
    found_buffers = iter(buffer.scan.discover())
    while page := list(islice(found_buffers, OBSERVE_PAGE)):
        open_lists = [f.key for f in page if f.state == BufferState.OPEN and f.has_list]
        looks = {} if idle is None or dry_run else buffer.scan.observe(open_lists, now)
        for found in page:
            _sort(chosen, found, looks.get(found.key), idle=idle, now=now, margin=expiry_margin)
    return chosen


def _sort(
    chosen: Selection,
    found: FoundBuffer,
    look: Observation | None,
    *,
    idle: timedelta | None,
    now: datetime,
    margin: timedelta | None,
) -> None:
    """Count one buffer, or add it to the candidates with why."""
    chosen.buffers += 1
    state = found.state
    if state == BufferState.QUARANTINED:
        chosen.quarantined += 1
    elif state == BufferState.ORPHANED:
        chosen.orphaned += 1
    elif not found.has_list and "chunk_count" not in found.meta:
        chosen.empty += 1  # a meta hash alone, with nothing ever counted in it
    elif state == BufferState.FINISHED:
        chosen.candidates.append((found, FINISHED))
    elif idle is not None and _quiet_for(found, look, now) >= idle:
        chosen.candidates.append((found, IDLE))
    elif (
        margin is not None
        and found.ttl_seconds is not None
        and found.ttl_seconds < margin.total_seconds()
    ):
        chosen.candidates.append((found, AT_RISK))
    else:
        chosen.active += 1


def _quiet_for(found: FoundBuffer, look: Observation | None, now: datetime) -> timedelta:
    """How long the buffer has certainly had no chunk (``genbuffer.idleness``): by the
    look just recorded (what observe.lua saw, atomically), else by what is stored."""
    meta = BufferMeta(found.meta)
    return quiet_for(
        now,
        last_chunk_at=meta.last_chunk_at,
        observation=look or meta.observation,
        end=found.end if look is None else look.end,
        idle_seconds=found.list_idle_seconds,
    )


def _compact_all(
    candidates: list[tuple[FoundBuffer, str]],
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
    delete: bool,
    dry_run: bool,
    workers: int,
    progress: Progress | None,
    regeneration: str | None,
    check_lease: Callable[[], None] = lambda: None,
) -> _Done:
    """Compact ``candidates``, up to ``workers`` at once: the counts and which generations.

    Results are handled here, in order of completion: acknowledgements (each after
    its own commit) go ACK_BATCH per round trip. On an outage, or once the job's lease
    is lost (``check_lease`` raises), no new compaction starts; those in flight
    finish, are acknowledged, and the outage (or LeaseLost) is raised.
    """
    if repository.dialect == "sqlite":
        workers = 1

    def run(candidate: tuple[FoundBuffer, str]) -> CompactionResult:
        found, why = candidate
        request = CompactionRequest(
            found.organization_id,
            found.generation_id,
            found.scenario_id,
            delete=delete,
            dry_run=dry_run,
            acknowledge=False,
            exact_key=True,
            key=found.key,
            selected=why,
            regeneration=regeneration,
        )
        return assemble_and_persist(request, buffer=buffer, repository=repository, config=config)

    tally = _Tally(buffer=buffer, delete=delete, dry_run=dry_run)
    queue = iter(candidates)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compact") as pool:
        running = {pool.submit(run, item): item for item in islice(queue, workers)}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                tally.settle(running.pop(future)[0], future)
                if progress:
                    progress(tally.done, len(candidates))
                tally.check(check_lease)
                if tally.outage is None and (following := next(queue, None)) is not None:
                    running[pool.submit(run, following)] = following
            if len(tally.acks) >= ACK_BATCH:
                buffer.protocol.acknowledge_many(tally.acks, delete=True)
                tally.acks = []
    buffer.protocol.acknowledge_many(tally.acks, delete=True)
    if tally.outage is not None:
        raise tally.outage
    failed = sorted(tally.failed)
    failures = [{"generation_id": gen, "error": message} for gen, message in failed]
    generations = [
        CompactedGeneration(organization_id=org, generation_id=gen)
        for org, gen in sorted(tally.generations, key=lambda ids: (ids[1], ids[0]))
    ]
    issues = sorted(tally.issues, key=lambda found: (found.generation_id, found.organization_id))
    return _Done(
        tally.compacted, tally.already_persisted, failures, tally.orphans, generations, issues
    )


@dataclass
class _Tally:
    """The results of a batch as they complete, and the acknowledgements they owe."""

    buffer: GenerationBuffer
    delete: bool
    dry_run: bool
    done: int = 0
    compacted: int = 0
    already_persisted: int = 0
    generations: list[tuple[int, int]] = field(default_factory=list)  # compacted: (org, gen)
    issues: list[GenerationIssues] = field(default_factory=list)  # validations that found some
    failed: list[tuple[int, str]] = field(default_factory=list)  # (generation id, message)
    orphans: list[dict[str, object]] = field(default_factory=list)  # reported once
    acks: list[tuple[str, str, int]] = field(default_factory=list)  # committed, to trim
    outage: DependencyUnavailable | LeaseLost | None = None  # why no new compaction starts

    def check(self, check_lease: Callable[[], None]) -> None:
        """Stop starting compactions once the job's lease is lost."""
        if self.outage is None:
            try:
                check_lease()
            except LeaseLost as lost:
                self.outage = lost

    def settle(self, found: FoundBuffer, future: Future[CompactionResult]) -> None:
        """Count one finished compaction; owe its acknowledgement if it committed."""
        self.done += 1
        try:
            result = future.result()
        except DependencyUnavailable as exc:
            self.outage = self.outage or exc
            return
        except GenerationNotFound as error:
            if self.dry_run or self.buffer.protocol.mark_orphaned(found.key, error.message):
                entry = {"generation_id": found.generation_id, "key": found.key}
                self.orphans.append({**entry, "error": error.message})
            return
        except GenbufferError as error:
            self.failed.append((found.generation_id, error.message))
            return
        except Exception as error:  # one bad generation must not stop the batch
            line = " ".join(str(error).split())[:300]
            self.failed.append((found.generation_id, f"{type(error).__name__}: {line}"))
            return
        if result.issues:
            self.issues.append(
                GenerationIssues(
                    organization_id=result.organization_id,
                    generation_id=result.generation_id,
                    validation_id=result.validation_id,
                    codes=sorted({issue["code"] for issue in result.issues}),
                )
            )
        if result.ok and not result.persisted and result.new_chunks == 0:
            self.already_persisted += 1  # nothing to write: the row held every chunk
        elif result.ok:
            self.compacted += 1
            self.generations.append((result.organization_id, result.generation_id))
        else:
            self.failed.append((found.generation_id, result.message))
        if (
            self.delete
            and not self.dry_run
            and result.stream_id
            and (result.ok or result.persisted)
        ):
            self.acks.append((result.key, result.stream_id, result.stream_end))
