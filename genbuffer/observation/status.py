"""genbuf status: every buffer by state, what is at risk, and what the database counts.

One pass over the keyspace (``Survey``: SCAN pages, pipelined, read-only) keeps
counters and, for ``--list``, the N oldest buffers in a heap: memory stays bounded
whatever the number of keys. The database adds the compaction ledger, validation
issues, which buffers have no row, and generations that were never compacted and
whose buffer is gone (``lost``).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import Field

from genbuffer import keys
from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.engine.idleness import quiet_for
from genbuffer.operations.exclusion import LeaseState
from genbuffer.prefixes import misplaced
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.meta import as_int, parse_time
from genbuffer.redis.survey import BufferFacts
from genbuffer.states import BufferState, LedgerResult

__all__ = [
    "STATES",
    "BufferEntry",
    "StatusOptions",
    "StatusReport",
    "Thresholds",
    "buffer_state",
    "collect_status",
]

STATES = (
    BufferState.STREAMING,
    BufferState.FINISHED,
    BufferState.IDLE,
    BufferState.QUARANTINED,
    BufferState.ORPHANED,
)
LOST_LISTED = 20  # lost generations named in the report (all are counted)
LAG_POINTS = (0.5, 0.95)


@dataclass(frozen=True)
class Thresholds:
    """Crossing any makes the report not ok (exit 1): for a cron alert."""

    max_pending: int | None = None
    max_age: timedelta | None = None
    max_at_risk: int | None = None


@dataclass(frozen=True)
class StatusOptions:
    """What to survey and how to judge it."""

    idle: timedelta = timedelta(minutes=30)  # an open stream this quiet counts as idle
    # the next compaction is expected within this (the compact-pending cron's period)
    compaction_within: timedelta = timedelta(hours=1)
    organization_id: int | None = None
    list_limit: int = 0  # 0: no list of buffers
    states: frozenset[str] | None = None  # the list's filter
    older_than: timedelta | None = None  # the list's filter
    thresholds: Thresholds = field(default_factory=Thresholds)
    page: int = 1000  # SCAN COUNT and keys per pipelined round trip
    pause: float = 0.0  # seconds slept between pages
    max_len: int | None = None  # GENERATION_CHUNK_MAX_LEN
    # GENERATION_EXPIRY_MARGIN: compactors take a buffer expiring within it, idle or
    # not; until one has, it counts as at risk
    expiry_margin: timedelta = timedelta(minutes=15)


class BufferEntry(Document):
    """One buffer in `status --list`."""

    organization_id: int
    scenario_id: int | None
    generation_id: int
    key: str
    state: str
    chunks: int | None
    bytes: int | None  # MEMORY USAGE of both keys
    age_seconds: float | None  # since its first chunk
    idle_seconds: float | None  # since its last chunk
    ttl_seconds: float | None  # until the chunks expire (-1: never)
    at_risk: bool
    last_error: str | None


class StatusReport(Document):
    """What `status --json` prints."""

    ok: bool
    prefix: str
    buffers: int
    generations: dict[str, int]
    chunks: int
    bytes: int | None  # MEMORY USAGE of every buffer key; None where the server refuses
    content_bytes: int  # what producers counted (meta `bytes`), where they count
    no_ttl: int  # keys that will never expire
    at_risk: int  # buffers whose chunks expire before their next expected compaction
    over_max_len: int  # lists longer than GENERATION_CHUNK_MAX_LEN
    max_len: int | None
    oldest_pending_age_seconds: float | None
    lost: int
    lost_generations: list[dict[str, int | None]] = Field(default_factory=list)
    compactions: dict[str, dict[str, int]] = Field(default_factory=dict)
    compaction_lag_seconds: dict[str, float] = Field(default_factory=dict)
    validation_issues_last_day: dict[str, int] = Field(default_factory=dict)
    # new streams that met an artifact in the last day: appended or replaced, by rule
    late_chunks_last_day: dict[str, dict[str, int]] = Field(default_factory=dict)
    # the compaction-events stream of `genbuf worker`: entries not done, held by a
    # worker, the workers alive, parked events, the oldest entry's age; None without any
    worker_queue: dict[str, float | int | None] | None = None
    # cron jobs' leases not released: held by a run now, or expired (that run died)
    job_leases: list[LeaseState] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list)
    scanned_keys: int = 0
    scan_seconds: float = 0.0
    entries: list[BufferEntry] | None = None
    taken_at: datetime
    # none under the prefix while buffers wait under these (key counts): an alert
    other_prefixes: dict[str, int] = Field(default_factory=dict)


def idle_for(facts: BufferFacts, now: datetime) -> float | None:
    """Seconds the buffer has certainly had no chunk, by the compactors' own rule
    (``genbuffer.engine.idleness``, with what they recorded: a survey records nothing);
    None when nothing is known yet (no producer timestamp, never looked at)."""
    meta = facts.meta
    if meta.last_chunk_at is None and meta.observation is None and facts.idle_seconds is None:
        return None
    quiet = quiet_for(
        now,
        last_chunk_at=meta.last_chunk_at,
        observation=meta.observation,
        end=facts.end,
        idle_seconds=facts.idle_seconds,
    )
    return quiet.total_seconds()


def buffer_state(
    facts: BufferFacts, *, has_row: bool | None, idle: float | None, idle_after: timedelta
) -> BufferState:
    """streaming, finished, idle, quarantined or orphaned (set aside, or no row)."""
    if facts.meta.quarantined:
        return BufferState.QUARANTINED
    # (set aside for want of a row that exists by now: the next sweep compacts it)
    if has_row is False or (facts.meta.orphaned and has_row is not True):
        return BufferState.ORPHANED
    if facts.meta.finished:
        return BufferState.FINISHED
    if idle is not None and idle >= idle_after.total_seconds():
        return BufferState.IDLE
    return BufferState.STREAMING


def _at_risk(facts: BufferFacts, state: str, idle: float | None, options: StatusOptions) -> bool:
    """Whether the chunks expire before the compaction they wait for is expected, or
    within GENERATION_EXPIRY_MARGIN (a compactor takes them early, until then at risk).

    Finished, idle and quarantined buffers are due within ``compaction_within``; a
    stream still open only once it has gone idle. Orphaned chunks have no row to go to.
    """
    ttl = facts.ttl
    if ttl is None or not facts.length or state == BufferState.ORPHANED:
        return False
    if ttl < options.expiry_margin.total_seconds():
        return True
    due = options.compaction_within.total_seconds()
    if state == BufferState.STREAMING:
        due += max(0.0, options.idle.total_seconds() - (idle or 0.0))
    return ttl < due


def _pending_age(facts: BufferFacts, state: str, idle: float | None, now: datetime) -> float | None:
    """How long a buffer has waited for compaction: since it finished, or went quiet."""
    if state == BufferState.FINISHED:
        finished = parse_time(facts.meta.get("finished_at"))
        return None if finished is None else max(0.0, (now - finished).total_seconds())
    return idle if state == BufferState.IDLE else None


@dataclass
class _Tally:
    """Counters of one survey, and the oldest buffers for the list (a bounded heap)."""

    options: StatusOptions
    now: datetime
    states: Counter[str] = field(default_factory=Counter)
    buffers: int = 0
    chunks: int = 0
    memory: int | None = 0
    content: int = 0
    no_ttl: int = 0
    at_risk: int = 0
    over_max_len: int = 0
    oldest_pending: float | None = None
    listed: list[tuple[float, int, BufferEntry]] = field(default_factory=list)

    def add(self, facts: BufferFacts, has_row: bool | None) -> None:
        """Count one buffer."""
        idle = idle_for(facts, self.now)
        state = buffer_state(facts, has_row=has_row, idle=idle, idle_after=self.options.idle)
        risky = _at_risk(facts, state, idle, self.options)
        self.buffers += 1
        self.states[state] += 1
        self.chunks += facts.length or 0
        self.content += as_int(facts.meta.get("bytes"))  # (a hostile value: none)
        self.memory = (
            None
            if self.memory is None or facts.memory_bytes is None
            else (self.memory + facts.memory_bytes)
        )
        self.no_ttl += facts.keys_without_ttl
        self.at_risk += risky
        if self.options.max_len is not None and (facts.length or 0) > self.options.max_len:
            self.over_max_len += 1
        pending = _pending_age(facts, state, idle, self.now)
        if pending is not None and (self.oldest_pending is None or pending > self.oldest_pending):
            self.oldest_pending = pending
        if self.options.list_limit:
            self._consider(facts, state, idle, risky)

    def _consider(self, facts: BufferFacts, state: str, idle: float | None, risky: bool) -> None:
        """Keep the buffer for --list if it passes the filters and is among the oldest."""
        if self.options.states is not None and state not in self.options.states:
            return
        first = facts.meta.get("first_chunk_at")
        started = parse_time(first)
        age = None if started is None else max(0.0, (self.now - started).total_seconds())
        known_age = age if age is not None else idle
        older_than = self.options.older_than
        if older_than is not None and (known_age or 0.0) < older_than.total_seconds():
            return
        entry = BufferEntry(
            organization_id=facts.organization_id,
            scenario_id=facts.scenario_id,
            generation_id=facts.generation_id,
            key=facts.key,
            state=state,
            chunks=facts.length,
            bytes=facts.memory_bytes,
            age_seconds=age,
            idle_seconds=idle,
            ttl_seconds=facts.list_ttl,
            at_risk=risky,
            last_error=facts.meta.get("last_error"),
        )
        item = (known_age or 0.0, -facts.generation_id, entry)
        if len(self.listed) < self.options.list_limit:
            heapq.heappush(self.listed, item)
        elif item[:2] > self.listed[0][:2]:
            heapq.heapreplace(self.listed, item)

    def entries(self) -> list[BufferEntry] | None:
        """The listed buffers, oldest first (None when no list was asked for)."""
        if not self.options.list_limit:
            return None
        return [entry for *_, entry in sorted(self.listed, key=lambda i: i[:2], reverse=True)]


def _pages(buffer: GenerationBuffer, options: StatusOptions) -> Iterator[list[BufferFacts]]:
    """The survey in pages (one database query per page finds which rows exist)."""
    page: list[BufferFacts] = []
    for facts in buffer.survey.buffers(options.page, options.pause):
        if options.organization_id is not None and facts.organization_id != options.organization_id:
            continue
        page.append(facts)
        if len(page) == options.page:
            yield page
            page = []
    if page:
        yield page


def _lost(
    buffer: GenerationBuffer, repository: Repository, options: StatusOptions, now: datetime
) -> tuple[int, list[dict[str, int | None]]]:
    """Rows with no artifact, older than the chunk TTL, with no buffer left under the
    prefix (with or without the scenario): their chunks expired or were evicted."""
    count = 0
    named: list[dict[str, int | None]] = []
    cutoff = now - timedelta(seconds=buffer.ttl)
    for page in repository.observations.without_artifact(cutoff):
        org_id = options.organization_id
        rows = [row for row in page if org_id is None or row[1] == org_id]
        candidates: dict[int, list[str]] = {}
        for gen, org, scenario in rows:
            names = {
                keys.chunks_key(org, gen, scen, buffer.prefix, tagged=tagged)
                for scen in {scenario, None}
                for tagged in (False, True)
            }
            candidates[gen] = [n for key in names for n in (key, keys.meta_key(key))]
        present = set(buffer.keyspace.existing_keys([n for v in candidates.values() for n in v]))
        for gen, org, scenario in rows:
            if not present.intersection(candidates[gen]):
                count += 1
                if len(named) < LOST_LISTED:
                    named.append(
                        {"organization_id": org, "scenario_id": scenario, "generation_id": gen}
                    )
    return count, named


def _alerts(report: StatusReport, thresholds: Thresholds) -> list[str]:
    """The thresholds crossed, each said in one line."""
    said: list[str] = []
    pending = report.generations[BufferState.FINISHED] + report.generations[BufferState.IDLE]
    if thresholds.max_pending is not None and pending > thresholds.max_pending:
        said.append(
            f"{pending} buffers wait for compaction (--max-pending {thresholds.max_pending})"
        )
    oldest = report.oldest_pending_age_seconds
    max_age = None if thresholds.max_age is None else int(thresholds.max_age.total_seconds())
    if max_age is not None and oldest is not None and oldest > max_age:
        said.append(f"the oldest pending buffer waits for {int(oldest)}s (--max-age {max_age}s)")
    if thresholds.max_at_risk is not None and report.at_risk > thresholds.max_at_risk:
        said.append(
            f"{report.at_risk} buffers expire before their compaction "
            f"(--max-at-risk {thresholds.max_at_risk})"
        )
    return said


def collect_status(
    buffer: GenerationBuffer,
    repository: Repository,
    options: StatusOptions,
    *,
    now: datetime | None = None,
) -> StatusReport:
    """Survey every buffer under the prefix and read the database's counts."""
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    tally = _Tally(options, now)
    observations = repository.observations

    def count(page: list[BufferFacts], rows: Future[dict[int, int]]) -> None:
        found = rows.result()
        for facts in page:
            tally.add(facts, has_row=found.get(facts.generation_id) == facts.organization_id)

    # Which rows exist is asked for a page while Redis is read for the next one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-rows") as pool:
        waiting: tuple[list[BufferFacts], Future[dict[int, int]]] | None = None
        for page in _pages(buffer, options):
            ids = sorted({facts.generation_id for facts in page})
            asked = pool.submit(observations.organizations_of, ids)
            if waiting is not None:
                count(*waiting)
            waiting = (page, asked)
        if waiting is not None:
            count(*waiting)
    scan_seconds = time.perf_counter() - started
    lost, lost_named = _lost(buffer, repository, options, now)
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    codes: Counter[str] = Counter()
    for _, _, errors, _ in observations.issues(since=day):
        codes.update(str(issue.get("code", "?")) for issue in errors if isinstance(issue, dict))
    lag = observations.lag_percentiles(day, LAG_POINTS)
    clock, leases = repository.leases.all()
    report = StatusReport(
        ok=True,
        prefix=buffer.prefix,
        buffers=tally.buffers,
        generations={state: tally.states[state] for state in STATES},
        chunks=tally.chunks,
        bytes=tally.memory,
        content_bytes=tally.content,
        no_ttl=tally.no_ttl,
        at_risk=tally.at_risk,
        over_max_len=tally.over_max_len,
        max_len=options.max_len,
        oldest_pending_age_seconds=tally.oldest_pending,
        lost=lost,
        lost_generations=lost_named,
        compactions={
            "last_hour": _results(observations.compactions(hour)),
            "last_day": _results(observations.compactions(day)),
        },
        compaction_lag_seconds={f"p{int(p * 100)}": value for p, value in lag.items()},
        validation_issues_last_day=dict(codes.most_common()),
        late_chunks_last_day=observations.late_chunks(day),
        worker_queue=_worker_queue(buffer, now),
        job_leases=[LeaseState.of(row, clock) for row in leases if row.released_at is None],
        scanned_keys=buffer.survey.scanned_keys,
        scan_seconds=round(scan_seconds, 3),
        entries=tally.entries(),
        taken_at=now,
    )
    alerts = _alerts(report, options.thresholds)
    # buffers under another prefix are an alert of their own, thresholds or not
    elsewhere, wrong_prefix = misplaced(buffer, tally.buffers)
    if wrong_prefix is not None:
        alerts.append(f"{wrong_prefix.message}; {wrong_prefix.hint}")
    update = {"alerts": alerts, "ok": not alerts, "other_prefixes": elsewhere}
    return report.model_copy(update=update)


def _worker_queue(buffer: GenerationBuffer, now: datetime) -> dict[str, float | int | None] | None:
    """The compaction-events stream's backlog and the worker fleet, as status reports
    them: ``consumers`` counts the workers alive now (a recent heartbeat), not every
    name the consumer group ever saw; ``parked``, the malformed entries set aside.
    None when there is no stream, no worker and nothing parked."""
    backlog = buffer.events.backlog()
    beats = buffer.fleet.members()
    parked = buffer.events.parked()
    if backlog is None and not beats and not parked:
        return None
    age = None
    if backlog is not None and backlog.oldest_entry_ms is not None:
        age = round(max(0.0, now.timestamp() - backlog.oldest_entry_ms / 1000), 3)
    clock = time.time()  # heartbeats are stamped with the real clock, whatever `now` says
    last_beat = max((beat.at for beat in beats), default=None)
    return {
        "entries": backlog.entries if backlog is not None else 0,
        "pending": backlog.pending if backlog is not None else 0,
        "consumers": sum(1 for beat in beats if beat.alive(clock)),
        "workers_known": len(beats),  # alive, or dead (killed) within the last day
        "parked": parked,
        "oldest_entry_age_seconds": age,
        "last_heartbeat_age_seconds": None
        if last_beat is None
        else round(max(0.0, clock - last_beat), 3),
    }


def _results(counts: dict[str, int]) -> dict[str, int]:
    """Ledger counts with every result named (0 when none)."""
    return {result: counts.get(result, 0) for result in LedgerResult}
