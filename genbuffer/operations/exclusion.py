"""One run of a cron job at a time: a lease on the job, held while the job works.

``hold_lease(repository.leases, "compact-pending")`` takes the job's lease and yields
a ``Lease``; ``acquired`` is False when another run holds it, and ``holder`` says
which (host, pid, since when, until when). While the block runs a thread renews the
lease every third of JOB_LEASE_TTL, each renewal a short transaction, and the block
calls ``lease.check()`` between units of work: it raises LeaseLost once the lease
may have expired unrenewed (another run may take it then), so two runs never work at
once. At the end the lease is released and the next run takes it at once.

A holder killed with kill -9 (or cut off from the database) stops renewing: its
lease expires at most JOB_LEASE_TTL later, and the next run takes it over and says
so. Nothing is kept on a database session, so this holds behind a pooler in
transaction mode, where a session advisory lock stayed held on a pooled server
connection and made every later run a silent no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal

from genbuffer.db.leases import RENEWALS_PER_TTL, JobLeases, LeaseRow
from genbuffer.documents import Document
from genbuffer.errors import GenbufferError, LeaseLost

__all__ = ["Lease", "LeaseState", "hold_lease"]

log = logging.getLogger(__name__)

# MariaDB's DATETIME keeps whole seconds: a stored expiry may be up to 1 s earlier than
# the one computed, so a holder counts its lease as ending that much sooner
CLOCK_SLACK = 1.0


class LeaseState(Document):
    """One job's lease as `status`, `doctor` and a refused run show it."""

    job: str
    state: Literal["held", "expired", "released"]  # expired: never released, holder gone
    host: str
    pid: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    released_at: datetime | None = None
    held_seconds: float  # since it was taken (until it was released)
    expires_in_seconds: float  # negative: expired that long ago

    @classmethod
    def of(cls, row: LeaseRow, now: datetime) -> LeaseState:
        """The row as seen at ``now`` (the database's clock)."""
        state: Literal["held", "expired", "released"] = (
            "released" if row.released_at is not None else "held" if row.held(now) else "expired"
        )
        end = row.released_at or now
        return cls(
            job=row.job,
            state=state,
            host=row.host,
            pid=row.pid,
            acquired_at=row.acquired_at,
            renewed_at=row.renewed_at,
            expires_at=row.expires_at,
            released_at=row.released_at,
            held_seconds=round(max(0.0, (end - row.acquired_at).total_seconds()), 3),
            expires_in_seconds=round((row.expires_at - now).total_seconds(), 3),
        )

    def holder(self) -> str:
        """Who took it: host, pid and when."""
        return f"{self.host} pid {self.pid} since {self.acquired_at:%Y-%m-%d %H:%M:%S}Z"

    def describe(self) -> str:
        """One line for people: who holds it and until when, or how long ago it lapsed."""
        if self.state == "held":
            return (
                f"held by {self.holder()}, renewed at {self.renewed_at:%H:%M:%S}Z, "
                f"expires in {self.expires_in_seconds:.0f}s unless renewed"
            )
        if self.state == "expired":
            return (
                f"expired {-self.expires_in_seconds:.0f}s ago, never released, by "
                f"{self.holder()}: that run died or cannot reach the database, "
                "and the next run takes it over"
            )
        return f"released (last run by {self.host} pid {self.pid})"


class Lease:
    """A job's lease as this run holds it (or not: ``acquired`` False, ``holder``)."""

    def __init__(
        self,
        job: str,
        *,
        acquired: bool = True,
        holder: LeaseState | None = None,
        renewal: _Renewal | None = None,
    ) -> None:
        self.job = job
        self.acquired = acquired
        self.holder = holder  # refused: the run that holds it (None if a race hid it)
        self._renewal = renewal

    def check(self) -> None:
        """Raise LeaseLost if the lease may have expired: stop before another run starts."""
        renewal = self._renewal
        if renewal is None:
            return
        if renewal.lost or time.monotonic() > renewal.deadline:
            raise LeaseLost(
                f"{self.job} stopped: its lease could not be renewed in time, so another run "
                "may take it over; what was done is committed",
                hint="check the database connection; the next run goes on with the rest"
                " (a longer JOB_LEASE_TTL rides out longer database outages)",
            )


class _Renewal:
    """The thread that renews a held lease every third of its TTL until stopped."""

    def __init__(self, leases: JobLeases, job: str, token: str, started: float) -> None:
        self.leases = leases
        self.job = job
        self.token = token
        self.ttl = leases.ttl.total_seconds()
        self.deadline = started + self.ttl - CLOCK_SLACK  # monotonic: when it may lapse
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job}", daemon=True)

    def start(self) -> None:
        """Renew in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the caller then releases the lease)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / RENEWALS_PER_TTL):
            started = time.monotonic()
            try:
                expires = self.leases.renew(self.job, self.token)
            except Exception as error:  # anything: a renewer that died would say nothing
                message = error.message if isinstance(error, GenbufferError) else repr(error)
                left = max(0.0, self.deadline - time.monotonic())
                log.warning(
                    "%s: its lease could not be renewed (%s); it lapses in %.0fs",
                    self.job,
                    message,
                    left,
                )
                continue
            if expires is None:
                self.lost = True
                log.error("%s: its lease was taken over by another run; stopping", self.job)
                return
            self.deadline = started + self.ttl - CLOCK_SLACK


@contextmanager
def hold_lease(leases: JobLeases, job: str) -> Iterator[Lease]:
    """Hold ``job``'s lease for the block (renewed meanwhile, released at the end); the
    lease yielded has ``acquired`` False, and its ``holder``, if another run holds it."""
    if not leases.shared:  # an in-memory database: no other process can run the job
        yield Lease(job)
        return
    started = time.monotonic()
    taken = leases.take(job, socket.gethostname(), os.getpid())
    if taken.token is None:
        held = taken.holder
        state = None if held is None else LeaseState.of(held, taken.now)
        yield Lease(job, acquired=False, holder=state)
        return
    if taken.took_over is not None:
        previous = LeaseState.of(taken.took_over, taken.now)
        log.warning(
            "%s: took over the lease of %s, which expired %.0fs ago without being "
            "released (that run died or lost the database)",
            job,
            previous.holder(),
            -previous.expires_in_seconds,
        )
    renewal = _Renewal(leases, job, taken.token, started)
    renewal.start()
    try:
        yield Lease(job, renewal=renewal)
    finally:
        renewal.stop()
        try:
            leases.release(job, taken.token)
        except GenbufferError as error:  # the lease lapses by itself: say when
            log.warning(
                "%s: its lease could not be released (%s); the next run can take it in %.0fs",
                job,
                error.message,
                leases.ttl.total_seconds(),
            )
