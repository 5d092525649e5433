"""Faults with real processes and servers: SIGKILL at every step, a PostgreSQL
backend terminated mid-transaction, Redis killed and restarted, a COMMIT whose
outcome is unknown, a TTL running out mid-compaction, poison generations, cron
overlap, and bad input. After each, a retry completes the work with nothing
lost or duplicated."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from genbuffer.compaction import CompactionRequest, assemble_and_persist
from genbuffer.db.repository import Repository
from genbuffer.errors import DatabaseUnavailable, Quarantined, RedisUnavailable
from genbuffer.faults import IN_ROW_STEPS, FaultPlan
from genbuffer.operations.exclusion import hold_lease
from genbuffer.redis import GenerationBuffer
from genbuffer.settings import Settings
from tests.conftest import Stack, require_server
from tests.helpers import compact, stored_bytes
from tests.support.clock import let_time_pass
from tests.support.faulty import Hold
from tests.support.runner import run_genbuf, spawn_genbuf
from tests.support.servers import PrivateRedis
from tests.support.urls import POSTGRES_ADMIN_URL
from tests.support.wait import wait_until


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may kill and restart."""
    require_server("redis")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def crash_stack(servers: Stack, private_redis: PrivateRedis) -> Stack:
    """Real PostgreSQL with the private Redis."""
    servers.env["REDIS_URL"] = private_redis.url
    return servers


def _genbuf(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_genbuf(list(args), {**stack.env, **env}, faults=bool(env))


def _spawn(stack: Stack, *args: str, **env: str) -> subprocess.Popen[str]:
    return spawn_genbuf(list(args), {**stack.env, **env}, faults=bool(env))


@pytest.mark.slow
@pytest.mark.parametrize("step", IN_ROW_STEPS)  # after_upload: tests/test_offload.py
def test_sigkill_at_every_step_then_retry(crash_stack: Stack, step: str) -> None:
    """kill -9 at each step: the buffer survives until its content is committed, and the
    retry persists every chunk exactly once and removes the buffer."""
    stack = crash_stack
    gen = stack.repository.create_generation(40)
    first = [f"<a{i}>".encode() for i in range(30)]
    stack.buffer.push_many(40, gen, first)
    killed = _genbuf(
        stack, "compact-generation", "40", str(gen), "--delete", GENBUFFER_CRASH_AT=step
    )
    assert killed.returncode == -9, killed.stderr
    committed = step in {"after_commit", "before_ack"}
    assert stored_bytes(stack, gen) == (b"".join(first) if committed else None)
    snapshot = stack.buffer.protocol.snapshot(stack.buffer.key_for(40, gen, None))
    assert snapshot.length == len(first)  # invariant 2: nothing removed before the commit
    second = [f"<b{i}>".encode() for i in range(10)]
    stack.buffer.push_many(40, gen, second)
    retry = _genbuf(stack, "compact-generation", "40", str(gen), "--delete", "--json")
    assert retry.returncode == 0, retry.stderr
    assert json.loads(retry.stdout)["deleted"]
    assert stored_bytes(stack, gen) == b"".join(first + second)
    assert stack.repository.backups(gen) == first + second
    assert stack.buffer.keyspace.generation_keys(40, gen) == []


def _wait_idle_in_transaction(database: str, timeout: float = 20) -> int:
    """The backend pid of the compactor paused inside its transaction."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:

        def paused() -> int | None:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()
            return None if row is None else int(row[0])

        return wait_until(paused, timeout, "the compactor to open its transaction")


@pytest.mark.slow
def test_postgres_backend_terminated_mid_transaction(crash_stack: Stack) -> None:
    """The backend dies while the row is updated but not committed: exit 3, row and
    buffer untouched; the retry completes."""
    stack = crash_stack
    gen = stack.repository.create_generation(41)
    chunks = [f"<{i}>".encode() for i in range(50)]
    stack.buffer.push_many(41, gen, chunks)
    hold = Hold("after_update", stack.tmp_path / "hold")
    proc = _spawn(stack, "compact-generation", "41", str(gen), "--delete", **hold.env())
    hold.wait_reached(proc)
    database = make_url(stack.env["DATABASE_URL"]).database
    pid = _wait_idle_in_transaction(str(database))
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    hold.release()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert stderr.startswith("error: ") and "Traceback" not in stderr
    assert stored_bytes(stack, gen) is None
    assert stack.buffer.protocol.snapshot(stack.buffer.key_for(41, gen, None)).length == 50
    retry = _genbuf(stack, "compact-generation", "41", str(gen), "--delete")
    assert retry.returncode == 0, retry.stderr
    assert stored_bytes(stack, gen) == b"".join(chunks)


@pytest.mark.slow
def test_redis_killed_after_the_commit(crash_stack: Stack, private_redis: PrivateRedis) -> None:
    """Redis dies between the commit and the acknowledgement: exit 3 with the row
    committed; once Redis is back the retry trims without duplicating."""
    stack = crash_stack
    gen = stack.repository.create_generation(42)
    chunks = [f"<{i}>".encode() for i in range(40)]
    stack.buffer.push_many(42, gen, chunks)
    hold = Hold("before_ack", stack.tmp_path / "hold")
    proc = _spawn(stack, "compact-generation", "42", str(gen), "--delete", **hold.env())
    hold.wait_reached(proc)
    assert stored_bytes(stack, gen) == b"".join(chunks)  # committed, not acknowledged
    private_redis.kill()
    hold.release()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    # the row is safe, and says so: the completion event that could not be sent is a
    # warning (the run that trims the buffer announces it), then the outage's one error
    warned, _, error = stderr.partition("error: ")
    assert error.startswith("Redis is unreachable"), stderr
    assert all(line.startswith("WARNING: ") for line in warned.splitlines()), stderr
    assert stored_bytes(stack, gen) == b"".join(chunks)
    private_redis.start()
    late = [b"<late>"]
    stack.buffer.push_many(42, gen, late)
    retry = _genbuf(stack, "compact-generation", "42", str(gen), "--delete")
    assert retry.returncode == 0, retry.stderr
    assert stored_bytes(stack, gen) == b"".join(chunks + late)
    assert stack.buffer.keyspace.generation_keys(42, gen) == []


@pytest.mark.slow
def test_redis_restarted_mid_compaction(crash_stack: Stack, private_redis: PrivateRedis) -> None:
    """Redis restarts between the snapshot and the read: the run either reconnects and
    finishes or exits 3; either way a retry leaves every chunk persisted once."""
    stack = crash_stack
    gen = stack.repository.create_generation(43)
    chunks = [f"<{i}>".encode() for i in range(40)]
    stack.buffer.push_many(43, gen, chunks)
    hold = Hold("after_snapshot", stack.tmp_path / "hold")
    proc = _spawn(stack, "compact-generation", "43", str(gen), "--delete", **hold.env())
    hold.wait_reached(proc)  # row locked, snapshot taken
    private_redis.restart()
    hold.release()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode in {0, 3}, stderr
    if proc.returncode == 3:
        assert _genbuf(stack, "compact-generation", "43", str(gen), "--delete").returncode == 0
    assert stored_bytes(stack, gen) == b"".join(chunks)
    assert stack.buffer.keyspace.generation_keys(43, gen) == []


@contextlib.contextmanager
def _commit_reply_lost(repository: Repository, applied: bool) -> Iterator[None]:
    """The next COMMIT fails as a dropped connection does, after the server applied it
    (``applied``) or before it got there."""
    armed = [True]

    def on_commit(connection: Connection) -> None:
        if not armed[0]:
            return
        armed[0] = False
        if applied:
            connection.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        raise sa_exc.OperationalError(
            "COMMIT", None, ConnectionResetError("connection lost during COMMIT")
        )

    event.listen(repository.engine, "commit", on_commit)
    try:
        yield
    finally:
        event.remove(repository.engine, "commit", on_commit)


@pytest.mark.parametrize("applied", [True, False])
def test_commit_with_unknown_outcome_is_checked_before_acknowledging(
    stack: Stack, applied: bool
) -> None:
    """A lost COMMIT reply: if the row holds the write, acknowledge; if not, exit 3 and keep
    the buffer. The retry completes either way."""
    gen = stack.repository.create_generation(44)
    chunks = [b"[1,", b"2]"]
    stack.buffer.push_many(44, gen, chunks)
    request = CompactionRequest(44, gen, delete=True)
    config = stack.config()
    if applied:
        with _commit_reply_lost(stack.repository, applied=True):
            result = assemble_and_persist(
                request, buffer=stack.buffer, repository=stack.repository, config=config
            )
        assert result.persisted and result.deleted
    else:
        with (
            _commit_reply_lost(stack.repository, applied=False),
            pytest.raises(DatabaseUnavailable),
        ):
            assemble_and_persist(
                request, buffer=stack.buffer, repository=stack.repository, config=config
            )
        assert stored_bytes(stack, gen) is None
        assert stack.buffer.keyspace.generation_keys(44, gen) != []
        assert compact(stack, 44, gen, delete=True).deleted
    assert stored_bytes(stack, gen) == b"[1,2]"


def test_ttl_running_out_during_a_compaction_loses_nothing(stack: Stack) -> None:
    """Keys due to expire in 1 s survive a compaction that takes 2.5 s (the TTL lease):
    2.5 s pass after its snapshot (tests/support/clock.py: a key whose TTL runs out in
    that time is deleted, as the server would have expired it)."""
    gen = stack.repository.create_generation(45)
    key = stack.buffer.push_many(45, gen, [b'{"a":', b"1}"]).key
    for name in (key, key + ":meta"):
        stack.buffer.client.expire(name, 1)

    def slow(step: str) -> None:
        if step == "after_snapshot":
            let_time_pass(stack.buffer, key, timedelta(seconds=2.5))

    result = compact(stack, 45, gen, config={"faults": FaultPlan(on_step=slow)})
    assert result.ok and stored_bytes(stack, gen) == b'{"a":1}'
    assert stack.buffer.keyspace.ttl_of(key) > 0


def test_poison_generation_is_quarantined_after_max_attempts(stack: Stack) -> None:
    """Repeated strict failures quarantine the generation; it is refused until --force."""
    gen = stack.repository.create_generation(46)
    stack.buffer.push_chunk(46, gen, b"{broken")
    results = [compact(stack, 46, gen, strict=True, config={"max_attempts": 3}) for _ in range(3)]
    assert [(r.attempts, r.quarantined) for r in results] == [(1, False), (2, False), (3, True)]
    with pytest.raises(Quarantined, match="quarantined after 3 failed attempts"):
        compact(stack, 46, gen, strict=True, config={"max_attempts": 3})
    refused = stack.cli("compact-generation", "46", str(gen), env={"COMPACTION_MAX_ATTEMPTS": "3"})
    assert refused.exit_code == 1 and "--force" in refused.stderr
    forced = compact(stack, 46, gen, strict=False, force=True, config={"max_attempts": 3})
    assert forced.persisted
    stack.buffer.push_chunk(46, gen, b"}")
    assert compact(stack, 46, gen, config={"max_attempts": 3}).persisted  # quarantine lifted


def test_unexpected_errors_count_towards_quarantine(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that raises on every attempt quarantines the generation instead of looping."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("validator exploded")

    monkeypatch.setattr("genbuffer.compaction.validator.validate", broken)
    gen = stack.repository.create_generation(47)
    stack.buffer.push_chunk(47, gen, b"{}")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            compact(stack, 47, gen, config={"max_attempts": 2})
    with pytest.raises(Quarantined, match="RuntimeError: validator exploded"):
        compact(stack, 47, gen, config={"max_attempts": 2})


def test_outages_do_not_count_towards_quarantine(tmp_path: Path, embedded: Stack) -> None:
    """Redis being down is not the generation's fault: no attempt is recorded."""
    gen = embedded.repository.create_generation(48)
    embedded.buffer.push_chunk(48, gen, b"{}")
    down = GenerationBuffer.from_settings(Settings(redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(RedisUnavailable):
        assemble_and_persist(
            CompactionRequest(48, gen),
            buffer=down,
            repository=embedded.repository,
            config=embedded.config(),
        )
    assert (
        "attempts"
        not in embedded.buffer.protocol.snapshot(embedded.buffer.key_for(48, gen, None)).meta
    )


@pytest.mark.parametrize("command", ["purge-chunks", "migrate-compacted-from-metadata"])
def test_cron_overlap_second_run_exits_0_saying_so(stack: Stack, command: str) -> None:
    """While one run holds the job's lease, a second exits 0 and says which run holds it."""
    with hold_lease(stack.repository.leases, command) as lease:
        assert lease.acquired
        second = stack.cli(command, "--json")
    assert second.exit_code == 0
    refused = json.loads(second.stdout)
    assert refused["already_running"] is True
    assert refused["held_by"]["pid"] == os.getpid()
    assert refused["held_by"]["state"] == "held"
    assert "already running elsewhere" in second.stderr
    assert f"pid {os.getpid()}" in second.stderr
    after = stack.cli(command, "--json")
    assert json.loads(after.stdout)["already_running"] is False


@pytest.mark.slow
def test_cron_overlap_across_processes(servers: Stack) -> None:
    """A purge in another process while this one holds the lock: exit 0, nothing done."""
    with hold_lease(servers.repository.leases, "purge-chunks"):
        done = _genbuf(servers, "purge-chunks", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["already_running"]


@pytest.mark.parametrize(
    ("payload", "args", "exit_code", "code"),
    [
        (b'{"score": NaN}', ["--strict"], 1, "invalid_json"),
        (b'{"a": "x\\u0000y"}', ["--soft"], 0, "json_unstorable"),
        (b'{"a": 1, "a": 2}', ["--strict"], 0, "duplicate_key"),
        (b"\xff\x00\xfe", ["--soft"], 0, "invalid_utf8"),
    ],
)
def test_bad_content_is_an_issue_with_the_right_exit_code(
    stack: Stack, payload: bytes, args: list[str], exit_code: int, code: str
) -> None:
    """Odd content is recorded as an issue, never a crash; soft mode keeps the bytes."""
    gen = stack.repository.create_generation(49)
    stack.buffer.push_chunk(49, gen, payload)
    result = stack.cli("compact-generation", "49", str(gen), *args, "--json")
    assert result.exit_code == exit_code, result.output
    out = json.loads(result.stdout)
    assert code in [issue["code"] for issue in out["issues"]]
    assert out["validation_id"] is not None
    expected = None if exit_code else payload
    assert stored_bytes(stack, gen) == expected


def test_generation_over_the_cap_is_an_issue_and_keeps_the_buffer(stack: Stack) -> None:
    """Over GENERATION_MAX_BYTES: exit 1, an oversize issue, the buffer untouched."""
    gen = stack.repository.create_generation(50)
    stack.buffer.push_many(50, gen, [b"x" * 1000] * 20)
    result = stack.cli(
        "compact-generation",
        "50",
        str(gen),
        "--delete",
        "--json",
        env={"GENERATION_MAX_BYTES": "5000"},
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["issues"][0]["code"] == "oversize"
    assert stack.buffer.protocol.snapshot(stack.buffer.key_for(50, gen, None)).length == 20
