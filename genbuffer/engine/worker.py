"""genbuf worker: a stream run of the engine; any number run at once, on any machines.

Each worker reads the compaction-events stream through one consumer group
(``genbuffer.redis.events``), runs each delivery through the engine's pool
(``genbuffer.engine.run``, ``genbuffer.engine.pool``: the compactions and outcomes
compact-pending has, with ``--delete`` semantics; entries that wait, up to BATCH to
a thread, in one transaction: ``Engine.run_many``), and acknowledges the entry only
once the compaction is done (or found needless). An entry whose worker died is taken
over after the visibility timeout (claimed on a timer, never in a loop). The fleet's
sweeper (``genbuffer.engine.sweeper``, one worker at a time, in a thread of its own)
announces what no entry names. So nothing depends on the producer cooperating, and a
duplicate delivery is harmless (compaction is idempotent).

Nothing a server does stops a worker: an outage, a read the server ended (the
stream deleted or resharded, a failover), a group that is gone (created again) or a
malformed entry (parked) is logged in one line and the loop goes on. Each worker
beats every few seconds from a thread of its own (status, metrics and doctor count
the live ones).

A compaction an outage stopped (Redis or the database unreachable, a connection the
server ended: a failover, ``pg_terminate_backend``) is run again by the same worker
once ``PAUSE`` has passed, not left for a take-over a ``--visibility`` later: its entry
stays pending (unacknowledged) meanwhile and waits on one of the worker's threads, so
the worker holds no more entries than it has threads and reads no new ones for that
thread. Each failure is one log line; an outage that persists is tried again once a
``PAUSE``, never in a loop; an entry is never run twice at once by one worker (a
take-over of it by this worker's own claim is dropped, as for one in flight), and is
acknowledged only once done. Should the worker die meanwhile, the entry is still taken
over after the visibility.

Stopping (SIGTERM, SIGINT: ``stop`` set) finishes the compactions in hand,
acknowledges them, takes no more, leaves the fleet and returns; an entry still waiting
to be run again after an outage stays pending, for a take-over.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

from genbuffer import keys
from genbuffer.compaction import CompactionConfig
from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.engine.pool import Finished, Pool, pool_size
from genbuffer.engine.run import BATCH, Engine, Job, Ran, one_line
from genbuffer.engine.sweeper import Sweeper
from genbuffer.errors import DependencyUnavailable, GenbufferError
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.events import Delivery, Event
from genbuffer.redis.fleet import HEARTBEAT_EVERY, WorkerBeat
from genbuffer.states import Outcome, WorkerOutcome

__all__ = ["Worker", "WorkerOptions", "WorkerSummary", "consumer_name"]

PAUSE = 1.0  # seconds before going on after Redis or the database failed, or refused
# (and before a compaction an outage stopped runs again)
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
        self.options = options
        self.engine = Engine(
            buffer, repository, config, delete=True, compacted_by=options.compacted_by
        )
        self._log = log
        self._logging = threading.Lock()  # the sweeper's thread logs too: whole lines
        self.events = buffer.events
        self.fleet = buffer.fleet
        self.summary = WorkerSummary(consumer=options.consumer)
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._group_ready = False
        # entries done and not yet acknowledged: sent with the next read (one round trip)
        self._done: list[str] = []
        # entries whose compaction an outage stopped, by entry id: (when it runs again on
        # time.monotonic()'s clock, the event); pending in the group, each keeping a thread
        self._again: dict[str, tuple[float, Event]] = {}

    def prepare(self) -> None:
        """What the first deliveries would otherwise wait for: the consumer group, and
        a database connection for each compaction at once. Never raises: what a server
        does is logged, and ``run`` goes on as it would."""
        size = pool_size(self.options.concurrency, self.repository.dialect)

        def ready() -> None:
            self.events.ensure_group()
            self._group_ready = True
            self.repository.warm(size)

        self._guarded(ready, None)

    def log(self, record: dict[str, Any]) -> None:
        """Hand one record to ``log``, one thread at a time."""
        with self._logging:
            self._log(record)

    def run(self, stop: threading.Event) -> WorkerSummary:
        """Compact what the stream delivers until ``stop`` is set."""
        size = pool_size(self.options.concurrency, self.repository.dialect)
        # the heartbeat and the sweeper have threads of their own: a long sweep or a
        # busy pool never makes a live worker look dead, nor delays a delivery
        stopped = threading.Event()
        sweeper = Sweeper(
            self.buffer,
            self._own_beat,
            expiry_margin=self.options.expiry_margin,
            counted=self._count_sweep,
            log=self.log,
            owners=self.repository.observations.organizations_of,
        )
        helpers = [
            threading.Thread(target=self._beat, args=(stopped,), name="worker-heartbeat"),
            threading.Thread(target=sweeper.run, args=(stopped,), name="worker-sweeper"),
        ]
        for helper in helpers:
            helper.start()
        try:
            with Pool[Event](size, name="worker") as pool:
                while not stop.is_set():
                    self._guarded(lambda: self._step(pool, stop), stop)
                self._guarded(lambda: self._settle(pool.drain()), stop)  # in hand
                self._guarded(self._acknowledge, stop)
        finally:
            stopped.set()
            for helper in helpers:
                helper.join()
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
            self._pause(WorkerOutcome.ERROR, one_line(error), stop)

    def _pause(self, outcome: WorkerOutcome, message: str, stop: threading.Event | None) -> None:
        self.log({"ok": False, "outcome": outcome, "message": message})
        if stop is not None:
            stop.wait(PAUSE)

    def _step(self, pool: Pool[Event], stop: threading.Event) -> None:
        """Run again what an outage stopped, once due; claim when due; take what the
        stream delivers (waiting on the read, on a compaction when every thread is busy,
        or until the next run again is due); acknowledge what finished."""
        now = time.monotonic()
        if not self._group_ready:
            self.events.ensure_group()
            self._group_ready = True
        self._run_again(pool, now)
        block = self.options.block.total_seconds()
        if pool.free <= 0:
            self._settle(pool.finished(timeout=block))
            return
        if self._again:  # none is due (a free thread took each due one): until the first
            block = min(block, min(due for due, _ in self._again.values()) - now)
        room = pool.free - len(self._again)  # each entry to run again keeps a thread
        if room <= 0:
            if pool.running:
                self._settle(pool.finished(timeout=block))
            else:
                stop.wait(block)
            return
        delivery = self._next_delivery(pool, now, room * BATCH, block)
        self._start(pool, delivery.events)
        self._handle(delivery)
        self._settle(pool.finished(timeout=0))

    def _run_again(self, pool: Pool[Event], now: float) -> None:
        """Start the entries an outage stopped whose pause is over, on free threads."""
        for entry, (due, event) in list(self._again.items()):
            if pool.free <= 0:
                return
            if due <= now:
                del self._again[entry]
                self._start(pool, [event])

    def _start(self, pool: Pool[Event], events: list[Event]) -> None:
        """Deliveries into the engine, in batches of up to BATCH in their order (a read
        takes BATCH for each free thread), each batch compacted in one transaction
        (``Engine.run_many``: fewer round trips and commits a compaction when entries
        wait). An event's key is used when it is this generation's under the prefix
        (else the engine looks the key up)."""
        for first in range(0, len(events), BATCH):
            batch = events[first : first + BATCH]
            requests = [self.engine.request(self._job(event)) for event in batch]
            pool.start_batch(batch, partial(self.engine.run_many, requests))

    def _job(self, event: Event) -> Job:
        """What the engine compacts for ``event``."""
        return Job(
            event.organization_id,
            event.generation_id,
            event.scenario_id,
            key=self._named_key(event),
            why=event.why,
        )

    def _next_delivery(self, pool: Pool[Event], now: float, room: int, block: float) -> Delivery:
        """Up to ``room`` entries of dead workers when a look is due, else new ones
        (blocking up to ``block`` seconds, at least 1 ms: a worker waits on the server,
        never in a loop of its own)."""
        if now >= self._next_claim:
            self._acknowledge()  # first: what this worker finished is not taken over
            visibility = int(self.options.visibility.total_seconds() * 1000)
            taken = self.events.take_over(
                self.options.consumer, visibility, room, start=self._claim_cursor
            )
            self._claim_cursor = taken.cursor
            # more may wait further on in the pending list: look again at once
            more = taken.cursor != "0-0" and bool(taken.events or taken.malformed)
            self._next_claim = now if more else now + self.options.claim_every
            # a compaction of this worker's that outlasts the visibility comes back to
            # it too (the claim only renews it): it runs once, where it already runs; so
            # does an entry waiting to run again after an outage that outlasts it
            held = {event.entry for event in pool.in_flight} | set(self._again)
            fresh = [event for event in taken.events if event.entry not in held]
            self.summary.taken_over += len(fresh)
            if fresh or taken.malformed or taken.interrupted:
                return replace(taken, events=fresh)
        block_ms = max(1, int(block * 1000))
        delivery = self.events.read(self.options.consumer, room, block_ms, done=self._done)
        self._done = []  # (kept for the next read when this one failed: XACK is idempotent)
        return delivery

    def _acknowledge(self) -> None:
        """Acknowledge the entries done, in a round trip of their own (none: no trip)."""
        self.events.acknowledge(self._done)
        self._done = []

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

    def _settle(self, finished: list[Finished[Event]]) -> None:
        """Log and count the finished compactions; their entries are acknowledged with
        the next read. An outage leaves its entry pending, to run again here once
        ``PAUSE`` has passed (compaction is idempotent; a take-over if the worker dies)."""
        for event, ran in finished:
            if isinstance(ran, DependencyUnavailable):
                self._again[event.entry] = (time.monotonic() + PAUSE, event)
                record = {"ok": False, "outcome": WorkerOutcome.OUTAGE, "entry": event.entry}
                self.log({**record, "generation_id": event.generation_id, "message": ran.message})
                continue
            self._done.append(event.entry)
            self._count(_logged(ran))
            self.log(_record(event, ran, self.options.consumer))

    def _count(self, outcome: WorkerOutcome) -> None:
        if outcome == WorkerOutcome.COMPACTED:
            self.summary.compacted += 1
        elif outcome == WorkerOutcome.NEEDLESS:
            self.summary.needless += 1
        elif outcome == WorkerOutcome.ORPHANED:
            self.summary.orphaned += 1
        else:
            self.summary.failed += 1

    def _count_sweep(self, sweeps: int, announced: int) -> None:
        self.summary.sweeps += sweeps
        self.summary.announced_by_sweeps += announced


def _record(event: Event, ran: Ran, consumer: str) -> dict[str, Any]:
    """The log record of one compaction: the delivery, what it came to, how long it took."""
    record: dict[str, Any] = {
        "entry": event.entry,
        "organization_id": event.organization_id,
        "generation_id": event.generation_id,
        "scenario_id": event.scenario_id,
        "consumer": consumer,
    }
    result = ran.result
    if result is None:
        record.update(ok=ran.ok, outcome=_logged(ran), message=ran.message)
    else:
        record.update(
            ok=result.ok,
            outcome=_logged(ran),
            key=result.key,
            persisted=result.persisted,
            deleted=result.deleted,
            chunk_count=result.chunk_count,
            bytes=result.bytes,
            message=result.message,
        )
    record["seconds"] = round(ran.seconds, 4)
    return record


def _logged(ran: Ran) -> WorkerOutcome:
    """The outcome as a worker's log says it. The log has no word for a buffer the row
    already held: trimmed by this run it is a compaction done (the run that committed
    it died before its trim), otherwise needless."""
    if ran.outcome == Outcome.ALREADY_PERSISTED:
        deleted = ran.result is not None and ran.result.deleted
        return WorkerOutcome.COMPACTED if deleted else WorkerOutcome.NEEDLESS
    return WorkerOutcome(ran.outcome.value)
