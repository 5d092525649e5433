"""The worker fleet's sweeper: what no event announced, found and announced.

One worker of the fleet at a time sweeps (a Redis lock held for one period): it
scans every buffer (``genbuffer.engine.selection``) and announces those no entry of
the compaction-events stream names: finished buffers (the producer's event lost, or
a producer that only sets `finished_at`), idle buffers of a plain `RPUSH` producer,
buffers whose chunks expire soon, and any of these set aside for want of a row that
has one by now. It applies the fleet's rule
(``genbuffer.redis.fleet``: the shortest --idle and --sweep-every of the live
workers), whichever worker holds the lock.

A sweep runs in a thread of its own: a sweep over a million buffers takes a while,
and the worker's deliveries never wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from genbuffer.engine.run import one_line
from genbuffer.engine.selection import IDLE, RowOwners, select_buffers
from genbuffer.errors import DependencyUnavailable, GenbufferError
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.fleet import FleetRule, WorkerBeat
from genbuffer.states import WorkerOutcome

__all__ = ["Sweeper"]

RETRY = 1.0  # seconds before a sweep that failed (an outage) is tried again


class Sweeper:
    """One worker's share of the fleet's sweeps; ``own_beat`` is the worker's options as
    the fleet sees them; ``counted`` is told (0, 1) for each buffer announced, (1, 0) for
    each sweep done."""

    def __init__(
        self,
        buffer: GenerationBuffer,
        own_beat: Callable[[], WorkerBeat],
        *,
        expiry_margin: timedelta | None,
        counted: Callable[[int, int], None],
        log: Callable[[dict[str, Any]], None],
        owners: RowOwners | None = None,
    ) -> None:
        self.buffer = buffer
        self.events = buffer.events
        self.fleet = buffer.fleet
        self.own_beat = own_beat
        self.expiry_margin = expiry_margin
        self.counted = counted
        self.log = log
        self.owners = owners  # which orphaned buffers have a row by now

    def run(self, stopped: threading.Event) -> None:
        """Sweep when due (the first time at once) until ``stopped`` is set; what a
        server does is logged in one line, then the sweep is tried again."""
        while True:
            try:
                wait = self.sweep_when_due()
            except DependencyUnavailable as error:
                self.log({"ok": False, "outcome": WorkerOutcome.OUTAGE, "message": error.message})
                wait = RETRY
            except GenbufferError as error:
                self.log({"ok": False, "outcome": WorkerOutcome.ERROR, "message": error.message})
                wait = RETRY
            except Exception as error:  # a long-running process never dies of a server's reply
                self.log({"ok": False, "outcome": WorkerOutcome.ERROR, "message": one_line(error)})
                wait = RETRY
            if stopped.wait(wait):
                return

    def sweep_when_due(self) -> float:
        """Sweep if this worker takes the fleet's sweep lock for a period; the seconds
        until the next try (the fleet's period)."""
        started = time.monotonic()
        rule = self._fleet_rule()
        period = rule.sweep_every_seconds
        consumer = self.own_beat().consumer
        if self.events.try_sweep(consumer, max(1, int(period * 1000))):
            idle = None if rule.idle_seconds is None else timedelta(seconds=rule.idle_seconds)
            self._announce_unqueued(idle)
            self.counted(1, 0)
            self.fleet.forget_dead()
        return max(0.0, period - (time.monotonic() - started))

    def _announce_unqueued(self, idle: timedelta | None) -> None:
        """Announce the chosen buffers no entry of the stream names (each counted)."""
        chosen = select_buffers(
            self.buffer,
            idle,
            datetime.now(UTC),
            dry_run=False,
            expiry_margin=self.expiry_margin,
            owners=self.owners,
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
            self.counted(0, 1)

    def _fleet_rule(self) -> FleetRule:
        """The live workers' rule (this worker's own options always among them); this
        worker's own when the fleet's hash holds another type of value (the sweep goes
        on, and its ``forget_dead`` says so once a sweep)."""
        mine = self.own_beat()
        try:
            beats = self.fleet.alive()
        except DependencyUnavailable:
            raise
        except GenbufferError:
            beats = []
        others = [beat for beat in beats if beat.consumer != mine.consumer]
        return FleetRule.of([*others, mine])
