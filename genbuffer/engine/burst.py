"""compact-pending: a burst run of the engine, for cron.

A scan chooses the buffers (``genbuffer.engine.selection``), the engine's pool
compacts them (``genbuffer.engine.run``, ``genbuffer.engine.pool``), and the run
ends: the same compactions and outcomes as the worker's, started by a scan instead
of a stream. Acknowledgements (trims) are sent here, a batch per round trip, each
only after its own commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import chain, islice
from typing import NamedTuple

from pydantic import Field

from genbuffer.compaction import CompactionConfig
from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.engine.pool import Pool, pool_size
from genbuffer.engine.run import BATCH, Engine, Job, Ran
from genbuffer.engine.selection import AT_RISK, Selection, chosen_pages
from genbuffer.errors import DependencyUnavailable, LeaseLost
from genbuffer.operations.batches import Progress
from genbuffer.operations.exclusion import LeaseState, hold_lease
from genbuffer.prefixes import check_prefix
from genbuffer.redis import FoundBuffer, GenerationBuffer
from genbuffer.states import Outcome

__all__ = [
    "DEFAULT_WORKERS",
    "CompactedGeneration",
    "GenerationIssues",
    "PendingResult",
    "compact_pending",
]

ACK_BATCH = 100  # acknowledgements sent per round trip (each only after its commit)
DEFAULT_WORKERS = 4  # generations compacted at once (genbuffer.engine.pool; 1 on SQLite)


class CompactedGeneration(Document):
    """A generation a run compacted, by its ids."""

    organization_id: int
    generation_id: int


class GenerationIssues(Document):
    """A generation whose validation found issues in a run (compacted or failed)."""

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
    """What a burst of compactions did: counts, and which generations."""

    compacted: int
    already_persisted: int
    failures: list[dict[str, object]]
    orphans: list[dict[str, object]]
    generations: list[CompactedGeneration]  # those `compacted` counts
    issues: list[GenerationIssues]


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
    no row is reported once, then set aside as orphaned, until its row exists. One run
    at a time (the job's lease: genbuffer.operations.exclusion). ``workers`` generations
    are compacted at once, each in its own transaction.
    """
    with hold_lease(repository.leases, "compact-pending") as lease:
        if not lease.acquired:
            return _already_running(lease.holder, dry_run=dry_run)
        # compactions start as the scan finds them, a page of buffers at a time
        chosen = Selection()
        pages = chosen_pages(
            buffer,
            idle,
            now or datetime.now(UTC),
            dry_run=dry_run,
            expiry_margin=expiry_margin,
            into=chosen,
            owners=repository.observations.organizations_of,
        )
        found = islice(chain.from_iterable(pages), limit)
        engine = Engine(
            buffer,
            repository,
            config,
            delete=delete,
            dry_run=dry_run,
            acknowledge=False,  # trimmed by _compact_all, a batch per round trip
            regeneration=regeneration,
        )
        done = _compact_all(
            found,
            engine,
            workers=workers,
            progress=progress and _counted(progress, chosen, limit),
            check_lease=lease.check,
        )
        for _ in pages:  # past --limit: the rest is still counted
            pass
        if chosen.buffers == 0:
            check_prefix(buffer)  # nothing here, but buffers elsewhere: say so, exit 1
    return _result(chosen, limit, done, dry_run=dry_run)


def _already_running(holder: LeaseState | None, *, dry_run: bool) -> PendingResult:
    """Another run holds the job's lease: nothing done, and who holds it."""
    return PendingResult(
        buffers=0,
        eligible=0,
        compacted=0,
        failed=0,
        skipped_quarantined=0,
        skipped_active=0,
        dry_run=dry_run,
        already_running=True,
        held_by=holder,
    )


def _result(chosen: Selection, limit: int | None, done: _Done, *, dry_run: bool) -> PendingResult:
    """What the run prints: the scan's counts beside what the compactions did."""
    candidates = chosen.candidates[:limit]
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


def _counted(progress: Progress, chosen: Selection, limit: int | None) -> Callable[[int], None]:
    """``progress`` told how many are done of the candidates found so far (the scan
    goes on meanwhile)."""

    def advance(done: int) -> None:
        found = len(chosen.candidates)
        progress(done, found if limit is None else min(found, limit))

    return advance


def _compact_all(
    candidates: Iterator[tuple[FoundBuffer, str]],
    engine: Engine,
    *,
    workers: int,
    progress: Callable[[int], None] | None,
    check_lease: Callable[[], None],
) -> _Done:
    """Compact ``candidates``, up to ``workers`` at once: the counts and which generations.

    Results are handled here, in order of completion: acknowledgements (each after
    its own commit) go ACK_BATCH per round trip. On an outage (a compaction's, or the
    scan's), or once the job's lease is lost (``check_lease`` raises), no new
    compaction starts; those in flight finish, are acknowledged, and the outage (or
    LeaseLost) is raised.
    """
    protocol = engine.buffer.protocol
    tally = _Tally()
    queue = _until_outage(candidates, tally)

    def start(pool: Pool[FoundBuffer], chosen: list[tuple[FoundBuffer, str]]) -> None:
        jobs = [
            Job(f.organization_id, f.generation_id, f.scenario_id, f.key, why) for f, why in chosen
        ]
        requests = [engine.request(job) for job in jobs]
        pool.start_batch([found for found, _ in chosen], partial(engine.run_many, requests))

    size = pool_size(workers, engine.repository.dialect)
    # a thread's first one alone (compacting starts while the scan goes on), then up to
    # BATCH in one transaction (a dry run: one at a time, on every thread)
    batch = 1 if engine.dry_run else BATCH
    with Pool[FoundBuffer](size, name="compact") as pool:
        for found, why in islice(queue, pool.size):
            start(pool, [(found, why)])
        while pool.running:
            for found, ran in pool.finished():
                tally.settle(found, ran)
                if progress:
                    progress(tally.done)
            tally.check(check_lease)
            while (
                tally.outage is None and pool.free > 0 and (following := list(islice(queue, batch)))
            ):
                start(pool, following)
            if len(tally.acks) >= ACK_BATCH:
                protocol.acknowledge_many(tally.acks, delete=True)
                tally.acks = []
    protocol.acknowledge_many(tally.acks, delete=True)
    if tally.outage is not None:
        raise tally.outage
    return tally.done_as()


def _until_outage(
    candidates: Iterator[tuple[FoundBuffer, str]], tally: _Tally
) -> Iterator[tuple[FoundBuffer, str]]:
    """``candidates`` until the scan meets an outage (Redis, or the database asked which
    orphans have their row by now): the run's outage, as a compaction's is. Raised from
    the scan, it skipped the acknowledgements of what had committed."""
    try:
        yield from candidates
    except DependencyUnavailable as outage:
        tally.outage = tally.outage or outage


@dataclass
class _Tally:
    """The results of a burst as they complete, and the acknowledgements they owe."""

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

    def settle(self, found: FoundBuffer, ran: Ran | DependencyUnavailable) -> None:
        """Count one finished compaction; owe its acknowledgement if it committed. A
        buffer the scan chose that turns out to hold nothing (needless) is a failure
        here: compact-pending reports it."""
        self.done += 1
        if isinstance(ran, DependencyUnavailable):
            self.outage = self.outage or ran
            return
        result = ran.result
        if ran.outcome == Outcome.ORPHANED:
            if ran.first_report:
                entry = {"generation_id": found.generation_id, "key": found.key}
                self.orphans.append({**entry, "error": ran.message})
            return
        if result is None:  # failed or needless before a result
            self.failed.append((found.generation_id, ran.message))
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
        if not result.ok:
            self.failed.append((found.generation_id, result.message))
        elif ran.outcome == Outcome.ALREADY_PERSISTED:
            self.already_persisted += 1  # nothing to write: the row held every chunk
        else:
            self.compacted += 1
            self.generations.append((result.organization_id, result.generation_id))
        if (ack := ran.owed_ack) is not None:
            self.acks.append(ack)

    def done_as(self) -> _Done:
        """The counts and lists, in id order."""
        failures = [
            {"generation_id": gen, "error": message} for gen, message in sorted(self.failed)
        ]
        generations = [
            CompactedGeneration(organization_id=org, generation_id=gen)
            for org, gen in sorted(self.generations, key=lambda ids: (ids[1], ids[0]))
        ]
        issues = sorted(self.issues, key=lambda found: (found.generation_id, found.organization_id))
        return _Done(
            self.compacted, self.already_persisted, failures, self.orphans, generations, issues
        )
