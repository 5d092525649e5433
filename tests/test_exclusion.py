"""Cron job leases (genbuffer.operations.exclusion, genbuffer.db.leases): one run at a time on
SQLite, PostgreSQL and MariaDB, taken over once a dead holder's lease expires, renewed
while the job works, a lost lease stops the job, and status, doctor and config show
say who holds what. A hypothesis state machine checks the lease rules against a model
on a clock it controls."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import update

from genbuffer.db.leases import JobLeases, LeaseRow
from genbuffer.db.rows import LEASES
from genbuffer.engine.burst import compact_pending
from genbuffer.errors import LeaseLost
from genbuffer.operations.exclusion import Lease, hold_lease
from tests.conftest import Stack
from tests.helpers import stored_bytes
from tests.support.wait import wait_until

ORG = 84
JOB = "compact-pending"


def _leases(stack: Stack, seconds: float = 60) -> JobLeases:
    return JobLeases(stack.repository.engine, stack.repository.url, timedelta(seconds=seconds))


def _set_lease(stack: Stack, **values: object) -> None:
    """Change the job's lease row behind its holder's back (a takeover, an expiry)."""
    with stack.repository.engine.begin() as connection:
        connection.execute(update(LEASES).where(LEASES.c.job == JOB).values(**values))


def test_a_held_lease_is_refused_with_its_holder_then_taken_once_released(stack: Stack) -> None:
    """A second take is refused and names the holder; after the release it succeeds at
    once, and nothing says a takeover happened."""
    leases = _leases(stack)
    first = leases.take(JOB, "host-a", 101)
    assert first.acquired and first.took_over is None
    refused = leases.take(JOB, "host-b", 202)
    assert not refused.acquired
    assert refused.holder is not None and (refused.holder.host, refused.holder.pid) == (
        "host-a",
        101,
    )
    assert first.token is not None
    leases.release(JOB, first.token)
    second = leases.take(JOB, "host-b", 202)
    assert second.acquired and second.took_over is None
    assert leases.take("purge-chunks", "host-c", 303).acquired  # each job has its own


def test_an_expired_lease_is_taken_over_and_said(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder that stopped renewing (kill -9) leaves an expired row: the next run takes
    it over and logs whose it was; the dead holder's renewal then finds it gone."""
    leases = _leases(stack)
    dead = leases.take(JOB, "host-a", 101)
    assert dead.token is not None
    _set_lease(stack, expires_at=datetime.now(UTC) - timedelta(seconds=30))
    with hold_lease(leases, JOB) as lease:
        assert lease.acquired
        assert leases.renew(JOB, dead.token) is None  # the dead run could not come back
    assert "took over the lease of host-a pid 101" in caplog.text


def _race(leases: JobLeases, runs: int = 8) -> list[int]:
    """``runs`` threads take the lease at the same moment; the pids that got it."""
    start = threading.Barrier(runs)
    won: list[int] = []

    def take(pid: int) -> None:
        start.wait()
        if leases.take(JOB, "racer", pid).acquired:
            won.append(pid)

    threads = [threading.Thread(target=take, args=(pid,)) for pid in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return won


def test_racing_runs_take_a_lease_exactly_once(stack: Stack) -> None:
    """Eight runs take the same lease at once, with no row yet, over an expired row and
    over a released one: exactly one gets it each time."""
    leases = _leases(stack)
    assert len(_race(leases)) == 1
    _set_lease(stack, expires_at=datetime.now(UTC) - timedelta(seconds=30))
    assert len(_race(leases)) == 1
    _, [row] = leases.all()
    leases.release(JOB, row.token)
    assert len(_race(leases)) == 1


def test_a_held_lease_is_renewed_while_the_job_works(stack: Stack) -> None:
    """With JOB_LEASE_TTL=3 the holder renews every second: its expiry moves on, so a
    job longer than the TTL keeps it; released at the end of the block."""
    leases = _leases(stack, seconds=3)
    with hold_lease(leases, JOB) as lease:
        _, [taken] = leases.all()

        def renewed() -> LeaseRow | None:
            _, [row] = leases.all()
            return row if row.renewed_at > taken.renewed_at else None

        row = wait_until(renewed, 10, "a renewal (every second with JOB_LEASE_TTL=3)")
        assert row.expires_at > taken.expires_at and row.token == taken.token
        lease.check()  # still ours
    _, [after] = leases.all()
    assert after.released_at is not None


def test_a_lost_lease_stops_the_job(embedded: Stack) -> None:
    """A lease another run took over (its holder stalled past the expiry) is found lost
    at the next renewal, and check() raises LeaseLost."""
    leases = _leases(embedded, seconds=3)
    with hold_lease(leases, JOB) as lease:
        _set_lease(embedded, token="f" * 32, host="thief", pid=1)
        with pytest.raises(LeaseLost, match="could not be renewed"):
            wait_until(lease.check, 10, "the next renewal to find the lease lost")
    _, [row] = leases.all()
    assert row.host == "thief" and row.released_at is None  # the thief's is left alone


def test_compact_pending_stops_starting_compactions_once_its_lease_is_lost(
    embedded: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compact-pending checks its lease between compactions: once it is lost no new one
    starts, what committed is kept, and the run fails with LeaseLost (the next run
    compacts the rest)."""
    gens = []
    for index in range(4):
        gen = embedded.repository.create_generation(ORG)
        embedded.buffer.push_many(ORG, gen, [f'{{"n":{index}}}'.encode()])
        embedded.buffer.finish(ORG, gen)
        gens.append(gen)

    class LostOnceStarted(Lease):
        def check(self) -> None:
            raise LeaseLost("compact-pending stopped: its lease could not be renewed")

    @contextmanager
    def fake(_leases: JobLeases, job: str) -> Iterator[Lease]:
        yield LostOnceStarted(job)

    monkeypatch.setattr("genbuffer.engine.burst.hold_lease", fake)
    with pytest.raises(LeaseLost):
        compact_pending(embedded.buffer, embedded.repository, embedded.config())
    done = [gen for gen in gens if stored_bytes(embedded, gen) is not None]
    assert len(done) == 1  # sqlite: one at a time; the one started finished, no other began
    monkeypatch.undo()
    rest = compact_pending(embedded.buffer, embedded.repository, embedded.config())
    assert rest.compacted == 3


def test_status_doctor_and_config_show_say_who_holds_what(stack: Stack) -> None:
    """status and doctor name a lease's holder (host, pid) while it is held, and say when
    one is held past its expiry (its run died); doctor and config show name the lock
    mechanism."""
    leases = _leases(stack)
    leases.take(JOB, "cron-host", 4242)
    status = json.loads(stack.cli("status", "--json").stdout)
    [held] = status["job_leases"]
    assert (held["job"], held["state"], held["host"], held["pid"]) == (
        JOB,
        "held",
        "cron-host",
        4242,
    )
    assert 0 < held["expires_in_seconds"] <= 60
    checks = {c["name"]: c for c in json.loads(stack.cli("doctor", "--json").stdout)["checks"]}
    assert "genbuf_job_leases" in checks["job exclusion"]["message"]
    assert checks[f"lease {JOB}"]["status"] == "ok"
    assert "cron-host pid 4242" in checks[f"lease {JOB}"]["message"]

    _set_lease(stack, expires_at=datetime.now(UTC) - timedelta(seconds=90))
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["job_leases"][0]["state"] == "expired"
    assert status["job_leases"][0]["expires_in_seconds"] < -80
    human = stack.cli("status")
    assert "never released" in human.stdout and "cron-host pid 4242" in human.stdout
    stale = {c["name"]: c for c in json.loads(stack.cli("doctor", "--json").stdout)["checks"]}
    assert stale[f"lease {JOB}"]["status"] == "warn"
    assert "expired" in stale[f"lease {JOB}"]["message"]

    shown = json.loads(stack.cli("config", "show", "--json").stdout)
    rows = {row["name"]: row for row in shown["settings"]}
    assert rows["JOB_LEASE_TTL"]["value"] == "60"
    assert "genbuf_job_leases" in rows["job exclusion (effective)"]["value"]


class LeaseMachine(RuleBasedStateMachine):
    """Three runs take, renew and release one job's lease while the clock moves; the
    model says who holds it, and every answer must agree with the model."""

    leases: JobLeases
    clock: list[datetime]
    TTL = timedelta(seconds=10)

    def __init__(self) -> None:
        super().__init__()
        self.job = f"job-{os.urandom(4).hex()}"  # a fresh row for each example
        self.tokens: dict[int, str] = {}  # run -> the token it took (maybe taken over since)
        self.holder: int | None = None  # the model: who took it last
        self.expires: datetime | None = None
        self.released = False

    def _now(self) -> datetime:
        return self.clock[0]

    def _valid(self) -> bool:
        return self.holder is not None and not self.released and self.expires > self._now()

    @rule(run=st.integers(0, 2))
    def take(self, run: int) -> None:
        """A run takes the lease: refused while another's (or its own) is valid."""
        taken = self.leases.take(self.job, f"host-{run}", run)
        if self._valid():
            assert not taken.acquired and taken.holder is not None
            assert taken.holder.pid == self.holder
            return
        assert taken.acquired and taken.token is not None
        stale = self.holder is not None and not self.released
        assert (taken.took_over is not None) == stale
        if taken.took_over is not None:
            assert taken.took_over.pid == self.holder
        self.tokens[run] = taken.token
        self.holder, self.expires, self.released = run, self._now() + self.TTL, False

    @precondition(lambda self: bool(self.tokens))
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        """A run renews: only the current, unreleased holder can (even just expired)."""
        run = data.draw(st.sampled_from(sorted(self.tokens)))
        renewed = self.leases.renew(self.job, self.tokens[run])
        if run == self.holder and not self.released:
            assert renewed == self._now() + self.TTL
            self.expires = renewed
        else:
            assert renewed is None

    @precondition(lambda self: bool(self.tokens))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """A run releases: only the current holder's release changes anything."""
        run = data.draw(st.sampled_from(sorted(self.tokens)))
        self.leases.release(self.job, self.tokens[run])
        if run == self.holder:
            self.released = True

    @rule(seconds=st.floats(0, 15))
    def wait(self, seconds: float) -> None:
        """Time passes on the database's clock."""
        self.clock[0] += timedelta(seconds=seconds)

    @invariant()
    def the_row_is_the_model(self) -> None:
        """The row names the model's holder, and it is held exactly when the model says."""
        now, rows = self.leases.all()
        row = next((r for r in rows if r.job == self.job), None)
        if self.holder is None:
            assert row is None
            return
        assert row is not None and row.pid == self.holder
        assert row.held(now) == self._valid()


def test_lease_rules_against_a_model(embedded: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state machine on SQLite, with the database's clock under its control."""
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    monkeypatch.setattr("genbuffer.db.leases.database_now", lambda _connection: clock[0])
    LeaseMachine.leases = JobLeases(
        embedded.repository.engine, embedded.repository.url, LeaseMachine.TTL
    )
    LeaseMachine.clock = clock
    runner = LeaseMachine.TestCase
    runner.settings = settings(
        max_examples=30,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    runner().runTest()
