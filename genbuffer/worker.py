"""genbuf worker: a long-running compactor; any number run at once, on any machines.

Each worker reads the compaction-events stream through one consumer group
(``genbuffer.redis.events``), compacts what it is given with ``--delete``
semantics, and acknowledges the entry only once the compaction is done (or found
needless). An entry whose worker died is taken over after the visibility timeout
(claimed on a timer, never in a loop). A sweeper, run by one worker at a time (a
Redis lock held for one period), announces what no entry in the stream names:
finished buffers (the producer's event lost, or a producer that only sets
`finished_at`) and idle buffers of a plain `RPUSH` producer. It applies the fleet's
rule (``genbuffer.redis.fleet``: the shortest --idle and --sweep-every of the live
workers), whichever worker holds the lock. So nothing depends on the producer
cooperating, and a duplicate delivery is harmless (compaction is idempotent).

Nothing a server does stops a worker: an outage, a read the server ended (the
stream deleted or resharded, a failover), a group that is gone (created again) or a
malformed entry (parked) is logged in one line and the loop goes on. Each worker
beats every few seconds from a thread of its own (status, metrics and doctor count
the live ones).

Stopping (SIGTERM, SIGINT: ``stop`` set) finishes the compactions in hand,
acknowledges them, takes no more, leaves the fleet and returns.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from genbuffer import keys
from genbuffer.batch import IDLE, select_buffers
from genbuffer.compaction import (
    CompactionConfig,
    CompactionRequest,
    CompactionResult,
    assemble_and_persist,
)
from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.errors import (
    DependencyUnavailable,
    GenbufferError,
    GenerationNotFound,
    NothingToCompact,
)
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.events import Delivery, Event
from genbuffer.redis.fleet import HEARTBEAT_EVERY, FleetRule, WorkerBeat
from genbuffer.states import WorkerOutcome

__all__ = ["Worker", "WorkerOptions", "WorkerSummary", "consumer_name"]

PAUSE = 1.0  # seconds before going on after Redis or the database failed, or refused
CLAIM_EVERY_MAX = 30.0  # seconds: entries of dead workers are looked for at least this often


def consumer_name() -> str:
    """This process's name in the consumer group: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs."""

    concurrency: int = 4
    idle: timedelta | None = None  # the sweeper also announces buffers this quiet
    # … and those whose chunks expire within this (GENERATION_EXPIRY_MARGIN)
    expiry_margin: timedelta | None = None
    visibility: timedelta = timedelta(minutes=5)  # then another worker takes an entry over
    sweep_every: timedelta = timedelta(minutes=1)
    block: timedelta = timedelta(seconds=1)  # the longest wait for an entry
    consumer: str = field(default_factory=consumer_name)
    compacted_by: str = "genbuf-worker"

    @property
    def claim_every(self) -> float:
        """Seconds between looks for entries of dead workers: half the visibility (so an
        entry waits at most 1.5 visibilities), at most ``CLAIM_EVERY_MAX``."""
        return min(self.visibility.total_seconds() / 2, CLAIM_EVERY_MAX)


class WorkerSummary(Document):
    """What a worker did, printed when it stops."""

    ok: bool = True
    consumer: str
    compacted: int = 0
    needless: int = 0  # already compacted, or the buffer was gone
    failed: int = 0
    orphaned: int = 0
    taken_over: int = 0  # entries of a worker that died
    parked: int = 0  # malformed entries set aside on the parked stream
    interruptions: int = 0  # reads the server ended, groups created again
    sweeps: int = 0
    announced_by_sweeps: int = 0


class Worker:
    """One worker process's loop; ``log`` receives one record per compaction, and one
    per thing a server did (outage, interruption, parked entry)."""

    def __init__(
        self,
        buffer: GenerationBuffer,
        repository: Repository,
        config: CompactionConfig,
        options: WorkerOptions,
        log: Callable[[dict[str, Any]], None] = lambda _: None,
    ) -> None:
        self.buffer = buffer
        self.repository = repository
        self.config = config
        self.options = options
        self.log = log
        self.events = buffer.events
        self.fleet = buffer.fleet
        self.summary = WorkerSummary(consumer=options.consumer)
        self._next_sweep = 0.0
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._group_ready = False

    def run(self, stop: threading.Event) -> WorkerSummary:
        """Compact what the stream delivers until ``stop`` is set."""
        size = max(1, self.options.concurrency if self.repository.dialect != "sqlite" else 1)
        running: dict[Future[dict[str, Any]], Event] = {}
        # the heartbeat has a thread of its own: a long sweep or a busy pool never
        # makes a live worker look dead
        stopped = threading.Event()
        beating = threading.Thread(target=self._beat, args=(stopped,), name="worker-heartbeat")
        beating.start()
        try:
            with ThreadPoolExecutor(max_workers=size, thread_name_prefix="worker") as pool:
                while not stop.is_set():
                    self._guarded(lambda: self._step(pool, running, size), stop)
                self._guarded(lambda: self._settle(running, timeout=None), stop)  # in hand
        finally:
            stopped.set()
            beating.join()
        self._guarded(self._leave, None)
        return self.summary

    def _guarded(self, action: Callable[[], None], stop: threading.Event | None) -> None:
        """Run one step; whatever a server did is logged in one line, then a pause."""
        try:
            action()
        except DependencyUnavailable as error:
            self._pause(WorkerOutcome.OUTAGE, error.message, stop)
        except GenbufferError as error:
            self._pause(WorkerOutcome.ERROR, error.message, stop)
        except Exception as error:  # a long-running process never dies of a server's reply
            self._pause(WorkerOutcome.ERROR, _one_line(error), stop)

    def _pause(self, outcome: WorkerOutcome, message: str, stop: threading.Event | None) -> None:
        self.log({"ok": False, "outcome": outcome, "message": message})
        if stop is not None:
            stop.wait(PAUSE)

    def _step(
        self,
        pool: ThreadPoolExecutor,
        running: dict[Future[dict[str, Any]], Event],
        size: int,
    ) -> None:
        """Sweep and claim when due; take what the stream delivers (waiting on the read,
        or on a compaction when every slot is busy); acknowledge what finished."""
        now = time.monotonic()
        if not self._group_ready:
            self.events.ensure_group()
            self._group_ready = True
        self._sweep_when_due(now)
        free = size - len(running)
        if free <= 0:
            self._settle(running, timeout=self.options.block.total_seconds())
            return
        delivery = self._next_delivery(free, now)
        for event in delivery.events:
            running[pool.submit(self._compact, event)] = event
        self._handle(delivery)
        self._settle(running, timeout=0)

    def _next_delivery(self, free: int, now: float) -> Delivery:
        """Entries of dead workers when a look is due, else new ones (blocking up to
        ``block``: a worker waits on the server, never in a loop of its own)."""
        if now >= self._next_claim:
            visibility = int(self.options.visibility.total_seconds() * 1000)
            taken = self.events.take_over(
                self.options.consumer, visibility, free, start=self._claim_cursor
            )
            self._claim_cursor = taken.cursor
            self.summary.taken_over += len(taken.events)
            # more may wait further on in the pending list: look again at once
            more = taken.cursor != "0-0" and bool(taken.events or taken.malformed)
            self._next_claim = now if more else now + self.options.claim_every
            if taken.events or taken.malformed or taken.interrupted:
                return taken
        block = max(1, int(self.options.block.total_seconds() * 1000))
        return self.events.read(self.options.consumer, free, block)

    def _handle(self, delivery: Delivery) -> None:
        """Say what the server did instead of delivering; park malformed entries."""
        if delivery.interrupted is not None:
            self.summary.interruptions += 1
            self._claim_cursor = "0-0"
            self.log(
                {"ok": False, "outcome": WorkerOutcome.INTERRUPTED, "message": delivery.interrupted}
            )
        for bad in delivery.malformed:
            self.events.park(bad)
            self.summary.parked += 1
            parked = keys.parked_events_key(self.buffer.prefix)
            self.log(
                {
                    "ok": False,
                    "outcome": WorkerOutcome.PARKED,
                    "entry": bad.entry,
                    "message": f"malformed event {bad.entry} parked on {parked}: {bad.reason}",
                }
            )

    def _beat(self, stopped: threading.Event) -> None:
        """Beat every ``HEARTBEAT_EVERY`` seconds until the worker stops (a beat lost to
        an outage is simply late: the main loop reports the outage)."""
        while True:
            with suppress(Exception):  # the main loop says what the server does
                self.fleet.beat(self._own_beat())
            if stopped.wait(HEARTBEAT_EVERY):
                return

    def _own_beat(self) -> WorkerBeat:
        options = self.options
        return WorkerBeat(
            consumer=options.consumer,
            at=time.time(),
            idle_seconds=None if options.idle is None else options.idle.total_seconds(),
            sweep_every_seconds=options.sweep_every.total_seconds(),
            visibility_seconds=options.visibility.total_seconds(),
            concurrency=options.concurrency,
        )

    def _leave(self) -> None:
        """A clean stop: no longer counted as alive, and out of the group when it holds
        nothing (what it holds stays for another worker to take over)."""
        self.fleet.leave(self.options.consumer)
        self.events.retire(self.options.consumer)

    def _compact(self, event: Event) -> dict[str, Any]:
        """One compaction with --delete; a record of what happened (never raises but for
        an outage, which leaves the entry unacknowledged for a retry)."""
        started = time.perf_counter()
        record: dict[str, Any] = {
            "entry": event.entry,
            "organization_id": event.organization_id,
            "generation_id": event.generation_id,
            "scenario_id": event.scenario_id,
            "consumer": self.options.consumer,
        }
        request = CompactionRequest(
            event.organization_id,
            event.generation_id,
            event.scenario_id,
            delete=True,
            exact_key=True,
            key=self._named_key(event),
            selected=event.why,
            compacted_by=self.options.compacted_by,
        )
        try:
            result = assemble_and_persist(
                request, buffer=self.buffer, repository=self.repository, config=self.config
            )
        except DependencyUnavailable:
            raise
        except NothingToCompact as error:  # compacted and deleted before: a duplicate
            record.update(ok=True, outcome=WorkerOutcome.NEEDLESS, message=error.message)
        except GenerationNotFound as error:
            key = self._named_key(event) or self.buffer.read_key_for(
                event.organization_id, event.generation_id, event.scenario_id
            )
            self.buffer.protocol.mark_orphaned(key, error.message)
            record.update(ok=False, outcome=WorkerOutcome.ORPHANED, message=error.message)
        except GenbufferError as error:  # counted as an attempt; the sweeper brings it back
            record.update(ok=False, outcome=WorkerOutcome.FAILED, message=error.message)
        except Exception as error:  # one bad generation must not stop the worker
            record.update(ok=False, outcome=WorkerOutcome.FAILED, message=_one_line(error))
        else:
            record.update(_result_record(result))
        record["seconds"] = round(time.perf_counter() - started, 4)
        return record

    def _named_key(self, event: Event) -> str | None:
        """The chunks key the event names, if it is a key of this generation under the
        prefix (anything else is ignored: the worker then looks the key up)."""
        if event.key is None:
            return None
        parts = keys.parse_chunks_key(event.key, self.buffer.prefix)
        named = (event.organization_id, event.scenario_id, event.generation_id)
        if parts is None or parts.is_meta or parts[:3] != named:
            return None
        return event.key

    def _settle(self, running: dict[Future[dict[str, Any]], Event], timeout: float | None) -> None:
        """Acknowledge the finished compactions (an outage leaves its entry pending)."""
        if not running:
            return
        if timeout is None:  # stopping: every compaction in hand
            done, _ = wait(running)
        else:
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        finished: list[str] = []
        for future in done:
            event = running.pop(future)
            try:
                record = future.result()
            except DependencyUnavailable as error:
                record = {"ok": False, "outcome": WorkerOutcome.OUTAGE, "entry": event.entry}
                self.log({**record, "generation_id": event.generation_id, "message": error.message})
                continue
            finished.append(event.entry)
            self._count(record)
            self.log(record)
        # an outage here leaves them pending: redelivered later, compaction is idempotent
        self.events.acknowledge(finished)

    def _count(self, record: dict[str, Any]) -> None:
        outcome = record.get("outcome")
        if outcome == WorkerOutcome.COMPACTED:
            self.summary.compacted += 1
        elif outcome == WorkerOutcome.NEEDLESS:
            self.summary.needless += 1
        elif outcome == WorkerOutcome.ORPHANED:
            self.summary.orphaned += 1
        else:
            self.summary.failed += 1

    def _sweep_when_due(self, now: float) -> None:
        """Announce the finished and idle buffers that no entry names, one worker per
        period across the fleet, by the fleet's rule."""
        if now < self._next_sweep:
            return
        rule = self._fleet_rule()
        period = rule.sweep_every_seconds
        self._next_sweep = now + period
        if not self.events.try_sweep(self.options.consumer, max(1, int(period * 1000))):
            return
        idle = None if rule.idle_seconds is None else timedelta(seconds=rule.idle_seconds)
        chosen = select_buffers(
            self.buffer,
            idle,
            datetime.now(UTC),
            dry_run=False,
            expiry_margin=self.options.expiry_margin,
        )
        queued = self.events.queued()  # announced and not done: no duplicate
        for found, why in chosen.candidates:
            if (found.organization_id, found.generation_id) in queued:
                continue
            self.events.announce(
                found.organization_id,
                found.generation_id,
                found.scenario_id,
                idle=why == IDLE,
                key=found.key,
                why=why,
            )
            self.summary.announced_by_sweeps += 1
        self.summary.sweeps += 1
        self.fleet.forget_dead()

    def _fleet_rule(self) -> FleetRule:
        """The live workers' rule (this worker's own options always among them)."""
        me = self.options.consumer
        others = [beat for beat in self.fleet.alive() if beat.consumer != me]
        return FleetRule.of([*others, self._own_beat()])


def _one_line(error: BaseException) -> str:
    """An unexpected error as one line: its type and its first 300 characters."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


def _result_record(result: CompactionResult) -> dict[str, Any]:
    """The log fields of a compaction that ran."""
    if result.persisted or (result.ok and result.deleted):
        outcome = WorkerOutcome.COMPACTED
    elif result.ok:
        outcome = WorkerOutcome.NEEDLESS
    else:
        outcome = WorkerOutcome.FAILED
    return {
        "ok": result.ok,
        "outcome": outcome,
        "key": result.key,
        "persisted": result.persisted,
        "deleted": result.deleted,
        "chunk_count": result.chunk_count,
        "bytes": result.bytes,
        "message": result.message,
    }
