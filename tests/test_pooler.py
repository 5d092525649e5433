"""Scenario suite: genbuf through a real PgBouncer 1.18 in transaction mode, started by
the tests (tests/support/pooler.py), as RDS Proxy and Supavisor pool.

A client's consecutive transactions run on whichever server connection is free, so
nothing that outlives a transaction may be relied on: cron rounds back to back each
compact their buffers and leave no lock behind, two runs at once leave exactly one
working, a run killed with kill -9 is taken over once its lease expires, a worker
fleet compacts everything, and no prepared statement reaches the pooler. (The state
machine runs through the pooler too: tests/test_state_machine.py, ON_POOLER.)
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from typer.testing import Result

from genbuffer.db.engine import make_engine
from genbuffer.db.rows import sent_directly
from tests.conftest import SUMMARY_LINES, Stack
from tests.helpers import audit_lines, stored_bytes
from tests.support.faulty import Hold
from tests.support.runner import FAULTY_GENBUF, GENBUF, clean_environ
from tests.support.urls import POSTGRES_ADMIN_URL
from tests.support.wait import wait_until

ORG = 83
LEASE_TTL = 3  # JOB_LEASE_TTL for the kill -9 test: the next run may wait this long


def _database(stack: Stack) -> str:
    return str(make_url(stack.env["DATABASE_URL"]).database)


def _server(sql: str, database: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` asked of PostgreSQL directly (not through the pooler)."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        return admin.execute(sql, (database,)).fetchall()


def _advisory_locks(database: str) -> list[tuple[Any, ...]]:
    """Advisory locks held in the database: what the session locks genbuf used left."""
    return _server(
        "SELECT l.pid, l.objid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = %s",
        database,
    )


def _lease_holder(database: str) -> int | None:
    """The pid of the run that holds compact-pending's lease (None: nobody)."""
    url = make_url(POSTGRES_ADMIN_URL).set(database=database)
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as db:
        holder = db.execute(
            "SELECT pid FROM genbuf_job_leases WHERE job = 'compact-pending' "
            "AND released_at IS NULL"
        ).fetchone()
    return None if holder is None else int(holder[0])


def _push_finished(stack: Stack, count: int, tag: str) -> dict[int, bytes]:
    """``count`` finished buffers of a few chunks each; what each row must then hold."""
    expected: dict[int, bytes] = {}
    for index in range(count):
        gen = stack.repository.create_generation(ORG)
        chunks = [f'{{"{tag}":{index},'.encode(), f'"gen":{gen}}}'.encode()]
        stack.buffer.push_many(ORG, gen, chunks)
        stack.buffer.finish(ORG, gen)
        expected[gen] = b"".join(chunks)
    return expected


def test_no_prepared_statement_reaches_the_pooler(pooled: Stack) -> None:
    """The same query run many times on two pooled connections in turn: psycopg would
    prepare it on its 6th run, and PgBouncer 1.18 would hand the next transaction a
    server connection that has it already (or lacks it)."""
    engine = make_engine(pooled.env["DATABASE_URL"])
    try:
        with engine.connect() as first, engine.connect() as second:
            for round_ in range(12):
                for connection in (first, second):
                    value = connection.execute(text("SELECT :n + 1"), {"n": round_}).scalar_one()
                    assert value == round_ + 1
                    connection.commit()
    finally:
        engine.dispose()


# What would outlive a transaction on the server connection a pooler lent: a session
# SET (SET LOCAL ends with its transaction), prepared statements, session locks,
# notifications, temporary tables, a cursor kept past its transaction.
SESSION_STATE = re.compile(
    r"^\s*(SET\s+(?!LOCAL\b)|RESET\b|PREPARE\b|DEALLOCATE\b|DISCARD\b|LISTEN\b|"
    r"UNLISTEN\b|CREATE\s+(TEMP|TEMPORARY|UNLOGGED)\b|DECLARE\b.*\bWITH\s+HOLD\b)"
    r"|pg_(try_)?advisory|GET_LOCK|set_config\s*\(",
    re.IGNORECASE | re.DOTALL,
)


def test_no_command_leaves_state_on_a_session(pooled: Stack) -> None:
    """Every statement the jobs, the compaction and the read-only commands send through
    the pooler (caught at SQLAlchemy's cursor) keeps to its transaction."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        expected = _push_finished(pooled, 3, "state")
        gen = pooled.repository.create_generation(ORG)
        pooled.buffer.push_many(ORG, gen, [b'{"x": 1}'])
        commands = [
            ["compact-generation", str(ORG), str(gen), "--delete"],
            ["compact-pending"],
            ["purge-chunks", "--older-than", "1s"],
            ["migrate-compacted-from-metadata"],
            ["emit-validation-test", str(gen), "--org", str(ORG)],
            ["status"],
            ["doctor"],
            ["validation-report"],
            ["metrics"],
            ["db", "check"],
        ]
        for command in commands:
            done = pooled.cli(*command, "--json")
            assert done.exit_code in (0, 1), (command, done.output)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    sent += sent_directly()  # the compaction's hot statements, sent past those events
    assert all(stored_bytes(pooled, g) == data for g, data in expected.items())
    assert audit_lines(pooled.audit_log)  # the validation test reached the database too
    assert len(sent) > 50
    assert [statement for statement in sent if SESSION_STATE.search(statement)] == []


def test_cron_rounds_back_to_back_each_compact_their_buffers(pooled: Stack) -> None:
    """Four compact-pending rounds with pushes between them each compact that round's
    buffers, then purge-chunks runs twice; after every job no advisory lock is held in
    the database and no lease is left held (a session lock stayed on the pooled server
    connection and made every later run a silent no-op)."""
    database = _database(pooled)
    for round_ in range(4):
        expected = _push_finished(pooled, 8, f"round{round_}")
        done = pooled.cli("compact-pending", "--json")
        assert done.exit_code == 0, done.output
        result = json.loads(done.stdout)
        assert result["already_running"] is False, (round_, done.stderr)
        assert result["compacted"] == 8, (round_, result)
        for gen, data in expected.items():
            assert stored_bytes(pooled, gen) == data
        assert _advisory_locks(database) == []
    for _ in range(2):
        purge = pooled.cli("purge-chunks", "--older-than", "1s", "--json")
        assert purge.exit_code == 0, purge.output
        assert json.loads(purge.stdout)["already_running"] is False
        assert _advisory_locks(database) == []
    status = json.loads(pooled.cli("status", "--json").stdout)
    assert status["job_leases"] == []


@pytest.mark.slow
def test_two_runs_at_once_exactly_one_works(pooled: Stack) -> None:
    """A second compact-pending started while the first is in the middle of its work
    exits 0 saying which run holds the job (host, pid); the first compacts everything."""
    expected = _push_finished(pooled, 4, "twice")
    hold = Hold("before_commit", pooled.tmp_path / "hold")
    first = subprocess.Popen(
        [*FAULTY_GENBUF, "compact-pending", "--json"],
        env=clean_environ({**pooled.env, **hold.env()}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hold.wait_reached(first)  # its compactions wait before their COMMIT
        assert _lease_holder(_database(pooled)) == first.pid
        second = pooled.cli("compact-pending", "--json")  # in-process, the first one held
        hold.release()
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.exit_code == 0, second.output
    refused = json.loads(second.stdout)
    assert refused["already_running"] is True and refused["compacted"] == 0
    assert refused["held_by"]["pid"] == first.pid
    assert f"pid {first.pid}" in second.stderr and "already running elsewhere" in second.stderr
    assert first.returncode == 0, err
    worked = json.loads(out)
    assert worked["already_running"] is False and worked["compacted"] == 4
    for gen, data in expected.items():
        assert stored_bytes(pooled, gen) == data


@pytest.mark.slow
def test_a_run_killed_with_kill_9_is_taken_over_once_its_lease_expires(pooled: Stack) -> None:
    """kill -9 of compact-pending in the middle of its compactions: runs right after say
    it is running (its lease is still valid), the first run after the lease expires
    takes it over, saying whose, and compacts every buffer; it waited at most
    JOB_LEASE_TTL (plus a renewal period) after the kill."""
    expected = _push_finished(pooled, 4, "killed")
    env = {**pooled.env, "JOB_LEASE_TTL": str(LEASE_TTL)}
    hold = Hold("before_commit", pooled.tmp_path / "hold")  # never released: killed there
    victim = subprocess.Popen(
        [*FAULTY_GENBUF, "compact-pending", "--json"],
        env=clean_environ({**env, **hold.env()}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        hold.wait_reached(victim)
        assert _lease_holder(_database(pooled)) == victim.pid
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    killed_at = time.monotonic()
    refusals = 0

    # the lease's own expiry on the database's clock, through the pooler, is what this
    # test times: it polls for it rather than moving it (tests.helpers.expire_lease)
    def taken_over() -> tuple[Result, dict[str, Any]] | None:
        nonlocal refusals
        run = pooled.cli("compact-pending", "--json", env=env)
        assert run.exit_code == 0, run.output
        result = json.loads(run.stdout)
        if not result["already_running"]:
            return run, result
        assert result["held_by"]["pid"] == victim.pid
        refusals += 1
        return None

    run, result = wait_until(taken_over, LEASE_TTL + 5, "the dead run's lease to lapse", every=0.2)
    waited = time.monotonic() - killed_at
    assert refusals >= 1  # right after the kill its lease was still valid
    assert waited <= LEASE_TTL + 1.5, waited
    assert "took over the lease of" in run.stderr and f"pid {victim.pid}" in run.stderr
    assert result["compacted"] == 4, result
    for gen, data in expected.items():
        assert stored_bytes(pooled, gen) == data
    SUMMARY_LINES.append(
        f"pooler: compact-pending killed with kill -9 mid-compaction; {refusals} runs said it "
        f"was running, the run {waited:.1f}s after the kill took its lease over "
        f"(JOB_LEASE_TTL={LEASE_TTL}s) and compacted all {len(expected)} buffers"
    )


@pytest.mark.slow
def test_a_worker_fleet_through_the_pooler(pooled: Stack, tmp_path: Path) -> None:
    """Two worker processes through PgBouncer compact 60 announced generations byte-exact
    with no failure (each compaction's statements repeat on a pooled connection), and
    stop with exit 0 on SIGTERM."""
    args = ["worker", "--json", "--concurrency", "4", "--visibility", "2s", "--sweep-every", "1s"]
    logs = [tmp_path / f"worker-{n}.jsonl" for n in range(2)]
    fleet = [
        subprocess.Popen(  # output to a file: a pipe nobody reads would block it
            [GENBUF, *args],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=clean_environ(pooled.env),
        )
        for log in logs
    ]
    try:
        # both workers up (their signal handlers set) before the last one can be stopped
        wait_until(lambda: len(pooled.buffer.fleet.alive()) == 2, 60, "two live workers")
        expected = _push_finished(pooled, 60, "fleet")
        wait_until(
            lambda: all(stored_bytes(pooled, gen) is not None for gen in expected),
            90,
            "the fleet's compactions",
        )
    finally:
        for worker in fleet:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=60) for worker in fleet]
    for gen, data in expected.items():
        assert stored_bytes(pooled, gen) == data
    assert codes == [0, 0]
    summaries = [json.loads(log.read_text().splitlines()[-1]) for log in logs]
    assert all(s["ok"] and s["failed"] == 0 for s in summaries), summaries
    assert sum(s["compacted"] for s in summaries) >= len(expected), summaries
    assert _advisory_locks(_database(pooled)) == []
