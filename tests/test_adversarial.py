"""What an adversarial pass broke (issue 10): each test failed on 6023d38.

Lost or duplicated chunks (sequence numbers across a delete, a failover to a lagging
replica, a vanished meta hash), content PostgreSQL refuses, eviction, refused writes,
leaked secrets and terminal escapes, and tracebacks where one line was promised.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from genbuffer import keys
from genbuffer.redis import GenerationBuffer
from tests.conftest import Stack, require_server
from tests.helpers import compact, stored_bytes
from tests.support.runner import GENBUF, run_genbuf
from tests.support.servers import PrivateRedis
from tests.support.wait import wait_until

ORG = 14


def _codes(result: Any) -> list[str]:
    return [issue["code"] for issue in result.issues]


# -- 1. sequence numbers across a --delete -----------------------------------------------


def test_a_retried_chunk_after_a_delete_is_not_duplicated(stack: Stack) -> None:
    """A, B (seq 0, 1), compact --delete, B retried (its reply was lost), C: ABC, no gap."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_chunk(ORG, gen, b"A", seq=0)
    stack.buffer.push_chunk(ORG, gen, b"B", seq=1)
    assert compact(stack, ORG, gen, delete=True).deleted
    stack.buffer.push_chunk(ORG, gen, b"B", seq=1)  # the retry
    stack.buffer.push_chunk(ORG, gen, b"C", seq=2)
    result = compact(stack, ORG, gen, delete=True)
    assert stored_bytes(stack, gen) == b"ABC"
    assert result.ok and "sequence_gap" not in _codes(result) and result.deleted


def test_the_next_chunk_after_a_delete_is_no_false_gap(stack: Stack) -> None:
    """A, B, compact --delete, C (seq 2): no sequence_gap; a real gap is still one."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"A", b"B"], seq=0)
    compact(stack, ORG, gen, delete=True)
    stack.buffer.push_chunk(ORG, gen, b"C", seq=2)
    result = compact(stack, ORG, gen, delete=True)
    assert result.ok and stored_bytes(stack, gen) == b"ABC", result.issues
    stack.buffer.push_chunk(ORG, gen, b"E", seq=4)  # seq 3 never came
    gap = compact(stack, ORG, gen, delete=True)
    assert "sequence_gap" in _codes(gap) and stored_bytes(stack, gen) == b"ABCE"


def test_a_sequenced_regeneration_still_replaces(stack: Stack) -> None:
    """A finished sequenced stream, deleted, streamed again from seq 0: a regeneration."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"[1,", b"2]"], seq=0)
    stack.buffer.finish(ORG, gen)
    compact(stack, ORG, gen, delete=True)
    stack.buffer.push_many(ORG, gen, [b"[3]"], seq=0)
    result = compact(stack, ORG, gen, delete=True)
    assert result.regenerated == "replaced" and stored_bytes(stack, gen) == b"[3]"


# -- 2. a failover to a replica that lagged ----------------------------------------------


def _copy_of(client: redis.Redis, names: list[str]) -> dict[str, tuple[bytes, int]]:
    """The keys as a lagging replica holds them: DUMP and TTL, taken now."""
    return {n: (client.dump(n), max(int(client.pttl(n)), 0)) for n in names if client.exists(n)}


def _promote(client: redis.Redis, copy: dict[str, tuple[bytes, int]], names: list[str]) -> None:
    """The replica becomes the primary: the keys are what it had, nothing newer."""
    client.delete(*names)
    for name, (value, ttl) in copy.items():
        client.restore(name, ttl, value, replace=True)


def test_failover_to_a_lagging_replica_stops_instead_of_deleting(stack: Stack) -> None:
    """a1-a5 compacted; the replica is promoted before b1-b3 reach it; b1-b3 were
    compacted from the old primary; c1-c4 pushed to the new one: compaction stops (exit
    1, stream_diverged recorded), nothing is deleted and the row is unchanged."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    names = [key, keys.meta_key(key)]
    stack.buffer.push_many(ORG, gen, [f"a{i}".encode() for i in range(1, 6)])
    compact(stack, ORG, gen)
    replica = _copy_of(stack.buffer.client, names)
    stack.buffer.push_many(ORG, gen, [b"b1", b"b2", b"b3"])
    compact(stack, ORG, gen)
    _promote(stack.buffer.client, replica, names)
    stack.buffer.push_many(ORG, gen, [b"c1", b"c2", b"c3", b"c4"])
    done = stack.cli("compact-generation", str(ORG), str(gen), "--delete", "--json")
    assert done.exit_code == 1, done.output
    out = json.loads(done.stdout)
    assert "stream_diverged" in [i["code"] for i in out["issues"]] and out["validation_id"]
    assert not out["deleted"] and not out["persisted"]
    assert stack.buffer.keyspace.list_length(key) == 9  # c1-c4 are all still there
    assert stored_bytes(stack, gen) == b"a1a2a3a4a5b1b2b3"


def test_an_old_buffer_life_coming_back_is_stopped(stack: Stack) -> None:
    """Compacted with --delete, then a replica that still had the old buffer is promoted:
    the old life is recognised and stopped, not appended a second time."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    names = [key, keys.meta_key(key)]
    stack.buffer.push_many(ORG, gen, [b"a1", b"a2"])
    stack.buffer.protocol.snapshot(key)  # the stream gets its id, and the replica a copy of it
    replica = _copy_of(stack.buffer.client, names)
    compact(stack, ORG, gen, delete=True)
    stack.buffer.push_many(ORG, gen, [b"b1"])
    compact(stack, ORG, gen, delete=True)
    _promote(stack.buffer.client, replica, names)
    stack.buffer.push_many(ORG, gen, [b"c1"])
    result = compact(stack, ORG, gen, delete=True)
    assert not result.ok and "stream_diverged" in _codes(result) and not result.deleted
    assert stored_bytes(stack, gen) == b"a1a2b1"


@pytest.fixture
def replication(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    """A primary and its replica, two real redis-server processes of this test's own."""
    require_server("redis")
    primary = PrivateRedis(tmp_path / "primary")
    (tmp_path / "primary").mkdir()
    primary.start()
    (tmp_path / "replica").mkdir()
    replica = PrivateRedis(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    replica.start()
    yield primary, replica
    replica.kill()
    primary.kill()


@pytest.mark.slow
def test_real_failover_to_a_lagging_replica(
    servers: Stack, replication: tuple[PrivateRedis, PrivateRedis]
) -> None:
    """The same with real replication: the replica is promoted (REPLICAOF NO ONE) before
    b1-b3 reach it; genbuf is pointed at it; compact --delete stops, deleting nothing."""
    primary, replica = replication
    stack = servers
    gen = stack.repository.create_generation(ORG)
    env = {**stack.env, "REDIS_URL": primary.url}
    promoted = redis.Redis.from_url(replica.url, socket_timeout=30)
    wait_until(
        lambda: promoted.info("replication").get("master_link_status") == "up",
        20,
        "the replica to synchronise",
    )
    to_primary = GenerationBuffer(
        redis.Redis.from_url(primary.url, socket_timeout=30), prefix=stack.buffer.prefix
    )
    to_primary.push_many(ORG, gen, [f"a{i}".encode() for i in range(1, 6)])
    assert stack.cli("compact-generation", str(ORG), str(gen), env=env).exit_code == 0
    assert to_primary.client.wait(1, 10_000) == 1  # the replica has a1-a5 and the stream id
    promoted.replicaof("NO", "ONE")
    to_primary.push_many(ORG, gen, [b"b1", b"b2", b"b3"])
    assert stack.cli("compact-generation", str(ORG), str(gen), env=env).exit_code == 0
    after = {**stack.env, "REDIS_URL": replica.url}
    GenerationBuffer(promoted, prefix=stack.buffer.prefix).push_many(
        ORG, gen, [b"c1", b"c2", b"c3", b"c4"]
    )
    done = stack.cli("compact-generation", str(ORG), str(gen), "--delete", "--json", env=after)
    assert done.exit_code == 1, done.output
    assert "stream_diverged" in done.stdout
    key = stack.buffer.key_for(ORG, gen, None)
    assert promoted.llen(key) == 9 and stored_bytes(stack, gen) == b"a1a2a3a4a5b1b2b3"


# -- 3. a meta hash that vanished --------------------------------------------------------


def test_a_lost_meta_hash_does_not_duplicate_what_was_persisted(stack: Stack) -> None:
    """A B C compacted, the meta hash disappears, D pushed, compact --delete: ABCD."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"A", b"B", b"C"]).key
    compact(stack, ORG, gen)
    stack.buffer.client.delete(keys.meta_key(key))
    stack.buffer.push_many(ORG, gen, [b"D"])
    result = compact(stack, ORG, gen, delete=True)
    assert stored_bytes(stack, gen) == b"ABCD" and result.deleted
    assert "lost" in result.message


def test_a_lost_meta_hash_alone_repeats_nothing(stack: Stack) -> None:
    """The meta hash vanishes and nothing new comes: a compaction adds nothing."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"A", b"B"]).key
    compact(stack, ORG, gen)
    stack.buffer.client.delete(keys.meta_key(key))
    result = compact(stack, ORG, gen, delete=True)
    assert result.ok and stored_bytes(stack, gen) == b"AB" and result.deleted


def test_the_same_bytes_after_a_delete_are_a_new_life(stack: Stack) -> None:
    """After --delete removed the buffer, a stream repeating the same chunk is appended."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"\x00"])
    compact(stack, ORG, gen, delete=True)
    stack.buffer.push_many(ORG, gen, [b"\x00"])
    compact(stack, ORG, gen, delete=True)
    assert stored_bytes(stack, gen) == b"\x00\x00"


# -- 4. valid JSON that jsonb rejects -----------------------------------------------------


def test_json_jsonb_rejects_is_stored_as_bytes(stack: Stack) -> None:
    """[1e-20000]: stored byte-exact, json_unstorable, llm_response null; no DataError."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"[1e-20000]"])
    done = stack.cli("compact-generation", str(ORG), str(gen), "--json")
    assert done.exit_code == 0, done.output
    assert "json_unstorable" in done.stdout and stored_bytes(stack, gen) == b"[1e-20000]"
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response is None


# -- 5. eviction --------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_test_fails_on_an_evicting_server_and_warns_without_persistence(
    tmp_path: Path,
) -> None:
    """allkeys-lru: the eviction check fails (exit 1); no AOF/RDB: a warning."""
    require_server("redis")
    server = PrivateRedis(tmp_path, "--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru")
    server.start()
    try:
        env = {"REDIS_URL": server.url, "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}"}
        done = run_genbuf(["test-redis-buffer", "--json"], env)
        assert done.returncode == 1, done.stderr
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert not checks["eviction"]["ok"] and "allkeys-lru" in checks["eviction"]["detail"]
        assert checks["persistence"]["ok"]  # AOF is on for this private server
    finally:
        server.kill()


def test_a_row_whose_buffer_vanished_is_reported_lost(stack: Stack) -> None:
    """A row older than the chunk TTL, no artifact, no buffer: buffer_missing, recorded."""
    gen = stack.repository.create_generation(ORG)
    with stack.repository.transaction() as tx:
        tx.update_generation(gen, {"created_at": stack_time_days_ago(3)})
    done = stack.cli("compact-generation", str(ORG), str(gen), "--json")
    assert done.exit_code == 1
    out = json.loads(done.stdout)
    assert [i["code"] for i in out["issues"]] == ["buffer_missing"] and out["validation_id"]


def stack_time_days_ago(days: int) -> Any:
    """A timestamp ``days`` ago, in UTC."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    return datetime.now(UTC) - timedelta(days=days)


# -- 7, 8. settings Redis refuses, writes Redis refuses -----------------------------------


def test_a_ttl_redis_refuses_is_a_usage_error_before_any_io(embedded: Stack) -> None:
    """GENERATION_CHUNK_TTL=9999999999999999: exit 2 before anything is pushed."""
    done = embedded.cli("push", "1", "2", input=b"x\n", env={"GENERATION_CHUNK_TTL": "9" * 16})
    assert done.exit_code == 2 and "GENERATION_CHUNK_TTL" in done.stderr
    assert embedded.buffer.keyspace.generation_keys(1, 2) == []


@pytest.mark.slow
def test_a_write_refused_when_redis_is_full_is_one_line(tmp_path: Path) -> None:
    """noeviction at maxmemory: `genbuf push` exits 1 with one line and the count."""
    require_server("redis")
    server = PrivateRedis(tmp_path, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    server.start()
    try:
        env = {"REDIS_URL": server.url, "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}"}
        lines = b"".join(b"%06d " % i + b"x" * 200 + b"\n" for i in range(40_000))
        done = run_genbuf(["push", "1", "2"], env, stdin=lines)
        stderr = done.stderr
        assert done.returncode == 1, stderr
        assert "refused" in stderr and "chunks confirmed" in stderr
        assert "Traceback" not in stderr
    finally:
        server.kill()


# -- 9, 10. secrets and terminal escapes --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pa/ss#w?rd@127.0.0.1:6399/0",
        "redis://user:s3cr3tpass@127.0.0.1:6399/0",
        "redis://127.0.0.1:6399/0?password=s3cr3tpass",
    ],
)
def test_config_show_never_prints_a_password(embedded: Stack, url: str) -> None:
    """REDIS_URL passwords (with / # ?, or as ?password=) are masked everywhere."""
    for args in (["config", "show"], ["config", "show", "--json"]):
        done = embedded.cli(*args, env={"REDIS_URL": url})
        assert "s3cr3t" not in done.output and "pa/ss" not in done.output, done.output


def test_terminal_escapes_in_content_are_shown_escaped(embedded: Stack, tmp_path: Path) -> None:
    """A JSON key holding ESC[2J reaches the issues table (a schema violation's path and
    message) as a visible escape, never as a control sequence sent to the terminal."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"additionalProperties": {"type": "string"}}))
    gen = embedded.repository.create_generation(ORG)
    embedded.buffer.push_many(ORG, gen, [b'{"\\u001b[2J\\u001b[31m": 1}'])
    done = embedded.cli(
        "compact-generation", str(ORG), str(gen), env={"GENERATION_JSON_SCHEMA": str(schema)}
    )
    assert done.exit_code == 0, done.output
    assert "schema_violation" in done.stdout
    assert "\x1b" not in done.stdout and "\\x1b[2J" in done.stdout


# -- 12 and the one-line errors ------------------------------------------------------------


def test_the_audit_log_is_never_written_through_a_symlink(embedded: Stack, tmp_path: Path) -> None:
    """METADATA_VALIDATION_LOG a symlink: one error line, the target untouched."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    link = tmp_path / "audit-link.log"
    link.symlink_to(target)
    done = embedded.cli("emit-validation-test", "5", env={"METADATA_VALIDATION_LOG": str(link)})
    assert done.exit_code == 1 and "symlink" in done.stderr
    assert target.read_text() == "keep me\n"


@pytest.mark.slow
def test_a_frozen_redis_is_exit_3_within_seconds(tmp_path: Path) -> None:
    """A Redis that stops answering (SIGSTOP): exit 3 in seconds, not minutes."""
    require_server("redis")
    server = PrivateRedis(tmp_path)
    server.start()
    assert server.process is not None
    try:
        server.process.send_signal(19)  # SIGSTOP: connections open, no replies
        env = {
            "REDIS_URL": server.url,
            "REDIS_SOCKET_TIMEOUT": "1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}",
        }
        started = time.monotonic()
        done = run_genbuf(["test-redis-buffer"], env, timeout=60)
        assert done.returncode == 3, done.stderr
        assert time.monotonic() - started < 20 and "Traceback" not in done.stderr
    finally:
        server.process.send_signal(18)  # SIGCONT, so that kill() can reap it
        server.kill()


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (["compact-generation", "1", "2", "--by", "x" * 300], {}, 2),
        (["emit-validation-test", "5"], {"DATABASE_URL": "foo://x"}, 2),
        # a SQLite file that does not exist is not created (only db upgrade creates one)
        (["emit-validation-test", "5"], {"DATABASE_URL": "sqlite:////proc/x/y.db"}, 3),
        (["db", "upgrade"], {"DATABASE_URL": "sqlite:////proc/x/y.db"}, 2),
    ],
)
def test_bad_settings_and_options_are_one_line(
    embedded: Stack, args: list[str], env: dict[str, str], code: int
) -> None:
    """A --by longer than the column, an unknown or unwritable DATABASE_URL: one line."""
    done = embedded.cli(*args, env=env)
    assert done.exit_code == code, done.output
    assert "Traceback" not in done.output and "error:" in done.stderr


def test_a_too_long_by_is_not_counted_toward_quarantine(embedded: Stack) -> None:
    """--by over 255 is refused before any I/O: no attempt is counted."""
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.push_many(ORG, gen, [b"[1]"]).key
    for _ in range(6):
        embedded.cli("compact-generation", str(ORG), str(gen), "--by", "x" * 300)
    assert embedded.buffer.client.hget(keys.meta_key(key), "attempts") is None


def test_a_non_utf8_env_file_is_one_line(embedded: Stack, tmp_path: Path) -> None:
    """An env file with a byte that is not UTF-8: exit 2, one line."""
    env_file = tmp_path / "bad.env"
    env_file.write_bytes(b"APP_NAME=caf\xe9\n")
    done = embedded.cli("--env-file", str(env_file), "config", "show")
    assert done.exit_code == 2 and "not UTF-8" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "said"),
    [("push 1 2 <&-", "stdin is closed"), ("config show --json >&-", "stdout is closed")],
    ids=["closed-stdin", "closed-stdout"],
)
def test_a_closed_standard_stream_is_one_line(tmp_path: Path, command: str, said: str) -> None:
    """`genbuf push 1 2 <&-` and `genbuf config show --json >&-`: exit 2, one line on
    stderr naming the closed stream, no traceback."""
    done = subprocess.run(
        [str(shutil.which("sh")), "-c", f"REDIS_URL=memory:// {GENBUF} {command}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_meta_hash_holding_only_finished_at_is_left_alone(stack: Stack) -> None:
    """finish() after a --delete brings back nothing; a meta hash with only finished_at
    (a producer's late HSET) is skipped by cron (nothing ever counted in it) instead of
    failing on it every run."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.finish(ORG, gen)
    assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
    stack.buffer.client.hset(keys.meta_key(key), "finished_at", "2026-01-01T00:00:00Z")
    done = stack.cli("compact-pending", "--json")
    out = json.loads(done.stdout)
    assert done.exit_code == 0 and (out["skipped_empty"], out["failed"]) == (1, 0)


def test_the_byte_cap_stops_reading_within_a_page(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GENERATION_MAX_BYTES 2 MB over 1 MB chunks: reading stops within a page (8 MB) of
    the cap instead of a whole 2,000-chunk page; oversize, nothing persisted."""
    from genbuffer.redis.protocol import PAGE_BYTES  # noqa: PLC0415

    gen = stack.repository.create_generation(ORG)
    chunk = b"x" * (1 << 20)
    stack.buffer.push_many(ORG, gen, [chunk] * 24)
    read_bytes = []
    original = stack.buffer.protocol.read

    def counting(*args: Any, **kwargs: Any) -> Iterator[list[bytes]]:
        for page in original(*args, **kwargs):
            read_bytes.append(sum(map(len, page)))
            yield page

    monkeypatch.setattr(stack.buffer.protocol, "read", counting)
    result = compact(stack, ORG, gen, config={"max_bytes": 2 << 20})
    assert not result.persisted and "oversize" in _codes(result)
    assert sum(read_bytes) <= (2 << 20) + PAGE_BYTES + len(chunk), read_bytes
    assert stored_bytes(stack, gen) is None


# -- a meta hash whose counters are not integers ------------------------------------------

HOSTILE_COUNTS = ("abc", "1e400", "nan", "inf", "-5", "1.5", "", "9" * 40, " 3")


def _hostile_counter_is_ignored(stack: Stack, field: str, value: str) -> None:
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"[1,", b"2,", b"3]"]).key
    stack.buffer.client.hset(keys.meta_key(key), field, value)
    first = compact(stack, ORG, gen)
    assert first.persisted and stored_bytes(stack, gen) == b"[1,2,3]", first.message
    stack.buffer.push_many(ORG, gen, [b" "])
    last = compact(stack, ORG, gen, delete=True)
    assert last.persisted and last.deleted, last.message
    assert stored_bytes(stack, gen) == b"[1,2,3] "
    assert stack.buffer.keyspace.generation_keys(ORG, gen) == []


@pytest.mark.parametrize("value", HOSTILE_COUNTS)
@pytest.mark.parametrize("field", ["chunk_count", "bytes"])
def test_a_counter_that_is_not_an_integer_loses_nothing(
    embedded: Stack, field: str, value: str
) -> None:
    """A meta hash whose chunk_count (or bytes) is not a non-negative integer (text,
    1e400, nan, negative, a fraction): pushes go on, and the buffer is compacted
    byte-exact and deleted, as for a meta hash without the field, instead of failing
    every run until the buffer expires."""
    _hostile_counter_is_ignored(embedded, field, value)


@pytest.mark.parametrize("value", ["1234567890123456", "999999999999999999"])
def test_a_counter_past_15_digits_is_counted_again_by_the_next_push(
    stack: Stack, value: str
) -> None:
    """A chunk_count (and bytes) of 16 to 18 digits is no count to any script, yet
    HINCRBY takes it: the next push counts again from what the list holds, as for any
    counter that is not one, so chunks that vanish later are reported, not silently
    matched against a counter nothing reads."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"[1,", b"2,"]).key
    meta = keys.meta_key(key)
    stack.buffer.client.hset(meta, mapping={"chunk_count": value, "bytes": value})
    stack.buffer.push_chunk(ORG, gen, b"3]")
    assert stack.buffer.client.hmget(meta, "chunk_count", "bytes") == [b"3", b"2"]
    stack.buffer.client.lpop(key)  # a chunk vanishes from the head
    result = compact(stack, ORG, gen, delete=True)
    assert result.persisted and stored_bytes(stack, gen) == b"2,3]", result.message
    assert "chunk_count_mismatch" in _codes(result)


def test_an_expired_that_is_not_an_integer_still_counts_what_vanished(stack: Stack) -> None:
    """Chunks vanished from the head (counted by `expired`) while `expired` is text: the
    rest is compacted, the loss reported, and `expired` counts it again."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"a", b"b", b"c"]).key
    stack.buffer.client.lpop(key)
    stack.buffer.client.hset(keys.meta_key(key), "expired", "abc")
    result = compact(stack, ORG, gen)
    assert result.persisted and stored_bytes(stack, gen) == b"bc", result.message
    assert "chunk_count_mismatch" in _codes(result)
    assert stack.buffer.client.hget(keys.meta_key(key), "expired") == b"1"


def test_attempts_that_is_not_an_integer_still_sets_an_orphan_aside(stack: Stack) -> None:
    """A buffer without a row whose `attempts` is text is set aside as orphaned, as any
    other (fail.lua counts from 0 again), instead of failing at every run."""
    key = stack.buffer.push_many(ORG, 987_654, [b"x"]).key
    stack.buffer.finish(ORG, 987_654)
    stack.buffer.client.hset(keys.meta_key(key), "attempts", "nan")
    done = stack.cli("compact-pending", "--json")
    out = json.loads(done.stdout)
    assert (out["failed"], len(out["orphaned"])) == (0, 1), done.stdout
    meta = stack.buffer.client.hgetall(keys.meta_key(key))
    assert b"orphaned_at" in meta and meta[b"attempts"] == b"1"


def test_gaps_that_is_not_an_integer_still_counts_a_jump(embedded: Stack) -> None:
    """A sequenced push that jumps ahead while `gaps` is text: appended, and the jump
    counted from 0 again."""
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.push_many(ORG, gen, [b"a"], seq=0).key
    embedded.buffer.client.hset(keys.meta_key(key), "gaps", "1e400")
    embedded.buffer.push_many(ORG, gen, [b"f"], seq=5)
    assert embedded.buffer.client.lrange(key, 0, -1) == [b"a", b"f"]
    assert embedded.buffer.client.hget(keys.meta_key(key), "gaps") == b"4"


@pytest.mark.parametrize("value", ["abc", "1e400", "-5"])
def test_a_trimmed_that_is_not_an_integer_stops_loudly_and_trims_nothing(
    stack: Stack, value: str
) -> None:
    """`trimmed` places every chunk, so one that is not a count is refused in one line
    naming the field; nothing is written, trimmed or lost, and once the field is
    mended the buffer is compacted byte-exact."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"[1,", b"2]"]).key
    stack.buffer.client.hset(keys.meta_key(key), "trimmed", value)
    refused = stack.cli("compact-generation", str(ORG), str(gen), "--delete")
    assert refused.exit_code == 1 and "trimmed of" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and stored_bytes(stack, gen) is None
    assert stack.buffer.client.llen(key) == 2
    stack.buffer.client.hset(keys.meta_key(key), "trimmed", "0")
    mended = compact(stack, ORG, gen, delete=True)
    assert mended.persisted and stored_bytes(stack, gen) == b"[1,2]", mended.message


@pytest.mark.parametrize("value", ["x", "1" * 16, "-" + "1" * 16, "1.5"])
def test_a_seq_base_that_is_not_an_integer_refuses_the_push_before_it_writes(
    embedded: Stack, value: str
) -> None:
    """A sequenced push cannot place its chunks against a `seq_base` that is no integer
    (of at most 15 digits, as Python reads it): refused in one line, nothing
    appended."""
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.push_many(ORG, gen, [b"a"], seq=0).key
    embedded.buffer.client.hset(keys.meta_key(key), "seq_base", value)
    with pytest.raises(Exception, match="seq_base"):
        embedded.buffer.push_many(ORG, gen, [b"b"], seq=1)
    assert embedded.buffer.client.lrange(key, 0, -1) == [b"a"]


@pytest.mark.backends("servers")
@pytest.mark.parametrize("value", ["abc", "1e400", "nan"])
def test_a_counter_that_is_not_an_integer_loses_nothing_on_servers(
    stack: Stack, value: str
) -> None:
    """The same on real Redis and PostgreSQL (Lua's tonumber is the server's own)."""
    _hostile_counter_is_ignored(stack, "chunk_count", value)


@pytest.mark.parametrize("value", ["abc", "1e400", "nan", "-5"])
def test_a_counter_that_is_not_an_integer_loses_nothing_on_a_cluster(
    cluster: Stack, value: str
) -> None:
    """On a cluster, the app's untagged keys (the split layout): the app's meta hash is
    read apart, and its count released after a --delete; a hostile count neither stops
    the trim nor leaves the meta hash behind."""
    _hostile_counter_is_ignored(cluster, "chunk_count", value)


# -- counters Redis's HINCRBY takes but Lua or Python may not (red team 2) ---------------

REDIS_INTEGERS = ("1" + "0" * 15, "9223372036854775807", "-9223372036854775808")
TEXT_COUNTS = ("-0", "+5", "0x10", " 5", "1e3")


@pytest.mark.parametrize("value", REDIS_INTEGERS + TEXT_COUNTS)
@pytest.mark.parametrize("field", ["chunk_count", "bytes", "trimmed"])
def test_readers_of_a_counter_that_is_not_a_count_print_no_traceback(
    embedded: Stack, field: str, value: str
) -> None:
    """status, metrics, inspect-generation and tail read the meta hash's counters by the
    scripts' rule: `bytes` of 0x10 or 1e3 stopped status and metrics on a ValueError, a
    `trimmed` that is no count stopped tail (one of 2^63 sent LRANGE past Redis's
    range); tail now refuses it in one line, as compaction does."""
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.push_many(ORG, gen, [b"[1,", b"2]"]).key
    embedded.buffer.client.hset(keys.meta_key(key), field, value)
    for args in (
        ("status", "--json", "--list"),
        ("metrics",),
        ("inspect-generation", str(ORG), str(gen), "--json"),
        ("tail", str(ORG), str(gen), "--json"),
    ):
        done = embedded.cli(*args)  # (a traceback is raised here)
        refused = field == "trimmed" and args[0] == "tail"  # (every one of them)
        assert done.exit_code == (1 if refused else 0), (args, done.output)
    if field == "trimmed":
        assert "trimmed of" in done.stderr and "not a count" in done.stderr


def test_a_key_of_another_type_under_the_prefix_stops_no_survey(stack: Stack) -> None:
    """A string where a chunks list (or its meta hash) would be: status, metrics and
    compact-pending skip it and go on (they stopped on WRONGTYPE, and with them every
    sweep: finished buffers were left to expire)."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"[1]"])
    stack.buffer.finish(ORG, gen)
    stray = stack.buffer.key_for(ORG, 987_001, None)
    stack.buffer.client.set(stray, "not a list")
    stack.buffer.client.set(keys.meta_key(stack.buffer.key_for(ORG, 987_002, None)), "x")
    for command in (["status", "--json"], ["metrics", "--json"]):
        done = stack.cli(*command)
        assert done.exit_code == 0 and "Traceback" not in done.stderr, done.stderr
    done = stack.cli("compact-pending", "--json")
    assert json.loads(done.stdout)["compacted"] == 1, done.stdout
    assert stored_bytes(stack, gen) == b"[1]"


def _keyspace(client: redis.Redis) -> dict[bytes, tuple[bytes | None, int]]:
    return {name: (client.dump(name), client.ttl(name)) for name in client.keys("*")}


@pytest.mark.parametrize("stray", ["chunks", "meta"])
@pytest.mark.parametrize(
    "command",
    [
        ("compact-generation", "--delete"),
        ("compact-generation", "--dry-run"),
        ("tail", "--json"),
        ("push",),
        ("push", "--finish"),
    ],
    ids=" ".join,
)
def test_a_buffer_key_of_another_type_is_one_line_and_writes_nothing(
    stack: Stack, stray: str, command: tuple[str, ...]
) -> None:
    """A string where a generation's chunks list or meta hash would be (WRONGTYPE): the
    commands that name that generation say so in one line (exit 1), and write nothing
    (snapshot.lua gave the meta hash a stream id before it stopped, with no TTL: a
    buffer "streaming" forever)."""
    _another_type(stack, stray, command)


def _another_type(stack: Stack, stray: str, command: tuple[str, ...]) -> None:
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    stack.buffer.client.set(key if stray == "chunks" else keys.meta_key(key), "not a buffer")
    before = _keyspace(stack.buffer.client)
    name, *options = command
    done = stack.cli(name, str(ORG), str(gen), *options, input="x\n")
    assert done.exit_code == 1 and "Traceback" not in done.stderr, done.output
    assert "another type" in done.stderr, done.stderr
    assert _keyspace(stack.buffer.client) == before
    assert stored_bytes(stack, gen) is None
    shown = stack.cli("inspect-generation", str(ORG), str(gen), "--json")  # QA's view of it
    assert shown.exit_code == 0 and '"type": "string"' in shown.stdout, shown.output


@pytest.mark.parametrize("stray", ["chunks", "meta"])
@pytest.mark.parametrize(
    "command",
    [("compact-generation", "--delete"), ("compact-generation", "--dry-run"), ("tail",)],
    ids=" ".join,
)
def test_a_buffer_key_of_another_type_on_a_cluster_writes_nothing(
    cluster: Stack, stray: str, command: tuple[str, ...]
) -> None:
    """The same on a Redis Cluster, where the app's untagged list and meta hash are in
    two slots (the meta hash is read before the snapshot)."""
    _another_type(cluster, stray, command)


def test_a_meta_key_of_another_type_on_a_cluster_push_says_what_it_appended(
    cluster: Stack,
) -> None:
    """The app's untagged list on a Redis Cluster, and a string where its meta hash goes:
    the list side of a push (its own slot) runs before the count is refused, so its
    chunks are in the list, not counted. The error said so, but its hint said genbuf's
    scripts wrote nothing: an operator who removed the string and pushed again doubled
    every chunk. It says how many were appended, and not to push them again."""
    gen = cluster.repository.create_generation(ORG)
    key = cluster.buffer.key_for(ORG, gen, None)
    cluster.buffer.client.set(keys.meta_key(key), "not a buffer")
    done = cluster.cli("push", str(ORG), str(gen), input="x\ny\n")
    assert done.exit_code == 1 and "Traceback" not in done.stderr, done.output
    assert "2 chunks appended to the list, not counted" in done.stderr, done.stderr
    assert "write nothing" not in done.stderr and "push them again" in done.stderr
    assert cluster.buffer.client.lrange(key, 0, -1) == [b"x\n", b"y\n"]
    cluster.buffer.client.delete(keys.meta_key(key))  # as the hint says: then compact
    compacted = cluster.cli("compact-generation", str(ORG), str(gen), "--delete")
    assert compacted.exit_code == 0 and stored_bytes(cluster, gen) == b"x\ny\n", compacted.output


def test_a_sequence_base_below_zero_is_no_gap(stack: Stack) -> None:
    """A list whose meta hash was lost, then a sequenced push from sequence 0: push.lua
    gives the life a base below 0 (the list's 3 chunks come before sequence 0). That is 3
    extra chunks, a warning, and no loss: it was reported as "skipped -3 sequence
    numbers: chunks missing" and the compaction as failed. Set by hand, the same."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"[1,", b"2,", b"3,"]).key
    stack.buffer.client.delete(keys.meta_key(key))
    stack.buffer.push_many(ORG, gen, [b"4]"], seq=0)
    assert stack.buffer.client.hget(keys.meta_key(key), "seq_base") == b"-3"
    result = compact(stack, ORG, gen, delete=True)
    assert result.persisted and stored_bytes(stack, gen) == b"[1,2,3,4]", result.message
    assert _codes(result) == ["chunk_count_mismatch"], result.issues
    assert result.issues[0]["severity"] == "warning" and "lost" not in result.message
    assert stack.buffer.push_many(ORG, gen, [b"5"], seq=1).appended == 1  # next: seq 1


def _audit_writers(gen: int) -> list[tuple[str, ...]]:
    """The commands that write a validation's row and its audit line."""
    return [
        ("compact-generation", str(ORG), str(gen), "--soft"),
        ("emit-validation-test", str(gen)),
        ("compact-pending", "--json"),
        ("worker", "--json"),
    ]


def test_an_audit_log_genbuf_cannot_write_stops_before_the_row(
    stack: Stack, tmp_path: Path
) -> None:
    """METADATA_VALIDATION_LOG in a place genbuf cannot write: every command that would
    write a validation's row and its line refuses in one line before the row (it
    committed the row, then failed on the line: exit 1 for a persisted compaction, and
    a re-run said "already compacted", so the line was lost for good). A dry run still
    runs; the worker does not start."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = {"METADATA_VALIDATION_LOG": str(blocker / "audit.log")}  # under a file
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"{bad"])
    stack.buffer.finish(ORG, gen)
    for command in _audit_writers(gen):
        refused = stack.cli(*command, env=unwritable)
        assert refused.exit_code == 1, (command, refused.output)
        assert "cannot write the audit log" in refused.stderr, (command, refused.stderr)
        assert "nothing was written" in refused.stderr, (command, refused.stderr)
    assert stored_bytes(stack, gen) is None
    assert stack.repository.issue(1) is None  # no row without its line
    dry = stack.cli("compact-generation", str(ORG), str(gen), "--dry-run", env=unwritable)
    assert dry.exit_code == 0 and "would persist" in dry.stdout, dry.output
    done = stack.cli("compact-generation", str(ORG), str(gen), "--soft")
    assert done.exit_code == 0 and stored_bytes(stack, gen) == b"{bad", done.output


def _within(seconds: float, fifo: Path, run: Any) -> Any:
    """``run()`` in a thread; if it is still waiting after ``seconds``, the pipe gets a
    reader (so the thread ends) and the test fails: it waited for one forever."""
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(run()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        thread.join(30)
        os.close(reader)
        pytest.fail(f"waited {seconds}s for a reader of the audit log {fifo}")
    return done[0]


def test_an_audit_log_that_is_a_named_pipe_nobody_reads_is_refused_at_once(
    stack: Stack, tmp_path: Path
) -> None:
    """METADATA_VALIDATION_LOG a named pipe (FIFO) no process reads: opening it for
    appending waited for a reader forever, before every compaction (check_appendable)
    and at the worker's start, where SIGTERM is not handled yet. Refused in one line
    now, nothing written; a pipe that has a reader (a log shipper) gets its line."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    env = {"METADATA_VALIDATION_LOG": str(fifo)}
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"{bad"])
    stack.buffer.finish(ORG, gen)
    for command in _audit_writers(gen):
        refused = _within(10, fifo, lambda command=command: stack.cli(*command, env=env))
        assert refused.exit_code == 1, (command, refused.output)
        assert "named pipe no process reads" in refused.stderr, (command, refused.stderr)
    assert stored_bytes(stack, gen) is None
    assert stack.repository.issue(1) is None
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        done = _within(10, fifo, lambda: stack.cli("emit-validation-test", str(gen), env=env))
        assert done.exit_code == 0, done.output
        assert json.loads(os.read(reader, 65536))["generation_id"] == gen
    finally:
        os.close(reader)
