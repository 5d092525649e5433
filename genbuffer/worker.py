"""genbuf worker: a long-running compactor; any number run at once, on any machines.

Each worker reads the compaction-events stream through one consumer group
(``genbuffer.redis.events``), compacts what it is given with ``--delete``
semantics, and acknowledges the entry only once the compaction is done (or found
needless). An entry whose worker died is taken over after the visibility timeout.
A sweeper, run by one worker at a time (a Redis lock held for one period),
announces what producers never do: finished buffers whose announcement was lost,
and idle buffers of a plain `RPUSH` producer. So nothing depends on the producer
cooperating, and a duplicate delivery is harmless (compaction is idempotent).

Stopping (SIGTERM, SIGINT: ``stop`` set) finishes the compactions in hand,
acknowledges them, takes no more, and returns.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
from genbuffer.redis.events import Event
from genbuffer.redis.meta import FINISHED_AT, parse_time
from genbuffer.redis.scan import FoundBuffer

__all__ = ["Worker", "WorkerOptions", "WorkerSummary", "consumer_name"]

OUTAGE_PAUSE = 1.0  # seconds before reading again after Redis or the database failed


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


class WorkerSummary(Document):
    """What a worker did, printed when it stops."""

    ok: bool = True
    consumer: str
    compacted: int = 0
    needless: int = 0  # already compacted, or the buffer was gone
    failed: int = 0
    orphaned: int = 0
    taken_over: int = 0  # entries of a worker that died
    sweeps: int = 0
    announced_by_sweeps: int = 0


class Worker:
    """One worker process's loop; ``log`` receives one record per compaction."""

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
        self.summary = WorkerSummary(consumer=options.consumer)
        self._next_sweep = 0.0

    def run(self, stop: threading.Event) -> WorkerSummary:
        """Compact what the stream delivers until ``stop`` is set."""
        self.events.ensure_group()
        size = max(1, self.options.concurrency if self.repository.dialect != "sqlite" else 1)
        running: dict[Future[dict[str, Any]], Event] = {}
        with ThreadPoolExecutor(max_workers=size, thread_name_prefix="worker") as pool:
            while not stop.is_set():
                try:
                    self._sweep_when_due()
                    free = size - len(running)
                    for event in self._next_events(free, busy=bool(running)):
                        running[pool.submit(self._compact, event)] = event
                except DependencyUnavailable as error:
                    self._outage(error, stop)
                self._settle(running, timeout=0.05 if running else 0)
            self._settle(running, timeout=None)  # the compactions in hand finish
        return self.summary

    def _next_events(self, free: int, *, busy: bool) -> list[Event]:
        """Entries of dead workers first, then new ones (waiting only when idle)."""
        if free <= 0:
            return []
        visibility = int(self.options.visibility.total_seconds() * 1000)
        taken = self.events.take_over(self.options.consumer, visibility, free)
        self.summary.taken_over += len(taken)
        if taken:
            return taken
        block = 1 if busy else max(1, int(self.options.block.total_seconds() * 1000))
        return self.events.read(self.options.consumer, free, block)

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
            record.update(ok=True, outcome="needless", message=error.message)
        except GenerationNotFound as error:
            key = self._named_key(event) or self.buffer.read_key_for(
                event.organization_id, event.generation_id, event.scenario_id
            )
            self.buffer.protocol.mark_orphaned(key, error.message)
            record.update(ok=False, outcome="orphaned", message=error.message)
        except GenbufferError as error:  # counted as an attempt; the sweeper brings it back
            record.update(ok=False, outcome="failed", message=error.message)
        except Exception as error:  # one bad generation must not stop the worker
            line = " ".join(str(error).split())[:300]
            record.update(ok=False, outcome="failed", message=f"{type(error).__name__}: {line}")
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
                record = {"ok": False, "outcome": "outage", "entry": event.entry}
                self.log({**record, "generation_id": event.generation_id, "message": error.message})
                continue
            finished.append(event.entry)
            self._count(record)
            self.log(record)
        try:
            self.events.acknowledge(finished)
        except DependencyUnavailable as error:  # redelivered later: compaction is idempotent
            self.log({"ok": False, "outcome": "outage", "message": error.message})

    def _count(self, record: dict[str, Any]) -> None:
        outcome = record.get("outcome")
        if outcome == "compacted":
            self.summary.compacted += 1
        elif outcome == "needless":
            self.summary.needless += 1
        elif outcome == "orphaned":
            self.summary.orphaned += 1
        else:
            self.summary.failed += 1

    def _sweep_when_due(self) -> None:
        """Announce finished and idle buffers, one worker per period across the fleet."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        period = self.options.sweep_every
        self._next_sweep = now + period.total_seconds()
        if not self.events.try_sweep(self.options.consumer, int(period.total_seconds() * 1000)):
            return
        stamp = datetime.now(UTC)
        chosen = select_buffers(
            self.buffer,
            self.options.idle,
            stamp,
            dry_run=False,
            expiry_margin=self.options.expiry_margin,
        )
        for found, why in chosen.candidates:
            if _recently_finished(found, stamp - self.options.visibility):
                continue  # its own event is most likely still queued: no duplicate
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

    def _outage(self, error: DependencyUnavailable, stop: threading.Event) -> None:
        self.log({"ok": False, "outcome": "outage", "message": error.message})
        stop.wait(OUTAGE_PAUSE)


def _recently_finished(found: FoundBuffer, since: datetime) -> bool:
    """Whether the producer marked the buffer finished after ``since`` (a sweep leaves
    it to the event finish() sent; one lost in a crash is swept a visibility later)."""
    stamp = parse_time(found.meta.get(FINISHED_AT, ""))
    return stamp is not None and stamp > since


def _result_record(result: CompactionResult) -> dict[str, Any]:
    """The log fields of a compaction that ran."""
    if result.persisted or (result.ok and result.deleted):
        outcome = "compacted"
    elif result.ok:
        outcome = "needless"
    else:
        outcome = "failed"
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
