"""The Redis buffer: push atomicity and meta, TTL, idempotent sequence numbers, inspection."""

from __future__ import annotations

import array
import contextlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from genbuffer import keys
from genbuffer.errors import (
    OperationFailed,
    PushOutcomeUnknown,
    RedisUnavailable,
    StreamChanged,
)
from genbuffer.redis import GenerationBuffer, layout
from genbuffer.redis.layout import PUSH_BATCH, layout_of
from genbuffer.settings import Settings
from tests.conftest import Stack, require_server
from tests.helpers import sequenced
from tests.support.proxy import ReplyCutter
from tests.support.runner import run_genbuf
from tests.support.servers import PrivateRedis

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def test_push_writes_list_meta_and_ttl_on_creation(stack: Stack) -> None:
    """One push: RPUSH, counters, timestamps, ids, and the TTL on both keys."""
    result = stack.buffer.push_chunk(12, 59, "héllo", scenario_id=345)
    assert result.key == (
        f"{stack.buffer.prefix}app:scenario_planning:org:12:scenario:345:generation:59:chunks"
    )
    meta = stack.buffer.protocol.snapshot(result.key).meta
    assert meta["chunk_count"] == "1" and meta["bytes"] == "6"
    assert (meta["organization_id"], meta["scenario_id"], meta["generation_id"]) == (
        "12",
        "345",
        "59",
    )
    assert meta["first_chunk_at"].endswith("Z") and meta["last_chunk_at"] >= meta["first_chunk_at"]
    for key in (result.key, keys.meta_key(result.key)):
        assert 86000 < stack.buffer.keyspace.ttl_of(key) <= 86400


def test_ttl_is_set_at_creation_not_refreshed(stack: Stack) -> None:
    """Later pushes do not extend the TTL set when the key was created."""
    key = stack.buffer.push_chunk(1, 2, b"a").key
    stack.buffer.client.expire(key, 100)
    stack.buffer.push_chunk(1, 2, b"b")
    assert stack.buffer.keyspace.ttl_of(key) <= 100


def test_sequence_numbers_make_retried_pushes_idempotent(stack: Stack) -> None:
    """A re-sent chunk (same seq) is skipped; a jump forward is recorded as a gap."""
    sequenced(stack)
    stack.buffer.push_many(1, 3, [b"a", b"b"], seq=0)
    retried = stack.buffer.push_chunk(1, 3, b"b", seq=1)
    assert (retried.appended, retried.skipped) == (0, 1)
    stack.buffer.push_chunk(1, 3, b"z", seq=5)
    snapshot = stack.buffer.protocol.snapshot(retried.key)
    assert snapshot.length == 3 and snapshot.gaps == 3
    assert snapshot.counted == 3  # chunk_count counts chunks appended; gaps are apart
    assert stack.buffer.push_chunk(1, 3, b"z", seq=5).skipped == 1  # next expected is 6


def test_push_over_max_len_warns(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """GENERATION_CHUNK_MAX_LEN exceeded: a warning naming the key."""
    stack.buffer.max_len = 2
    with caplog.at_level(logging.WARNING, logger="genbuffer"):
        stack.buffer.push_many(1, 4, [b"a", b"b", b"c"])
    assert "over GENERATION_CHUNK_MAX_LEN=2" in caplog.text


def test_large_batches_keep_order(stack: Stack) -> None:
    """push_many splits big batches across Lua calls without reordering."""
    sent = [str(i).encode() for i in range(2500)]
    key = stack.buffer.push_many(1, 5, sent).key
    snapshot = stack.buffer.protocol.snapshot(key)
    assert [
        c for page in stack.buffer.protocol.read(snapshot, 0, snapshot.end) for c in page
    ] == sent


def test_acknowledge_trims_only_committed_chunks(stack: Stack) -> None:
    """An acknowledgement trims by absolute position; repeated or older ones are no-ops."""
    key = stack.buffer.push_many(1, 6, [b"a", b"b", b"c"]).key
    snapshot = stack.buffer.protocol.snapshot(key)
    assert stack.buffer.protocol.acknowledge(key, snapshot.stream_id or "", 2, delete=True) == (
        2,
        False,
        1,
    )
    assert stack.buffer.protocol.acknowledge(key, snapshot.stream_id or "", 1, delete=True) == (
        0,
        False,
        1,
    )
    again = stack.buffer.protocol.snapshot(key)
    assert (again.trimmed, again.length) == (2, 1)
    assert list(stack.buffer.protocol.read(again, 2, 3)) == [[b"c"]]
    assert stack.buffer.protocol.acknowledge(key, snapshot.stream_id or "", 3, delete=True) == (
        1,
        True,
        0,
    )
    assert stack.buffer.keyspace.generation_keys(1, 6) == []


def test_inspection_finds_scenario_keys_by_scan(stack: Stack) -> None:
    """Without --scenario-id every scenario's keys of the generation are found."""
    stack.buffer.push_chunk(1, 7, b"a", scenario_id=10)
    stack.buffer.push_chunk(1, 7, b"b")
    stack.buffer.push_chunk(1, 70, b"other generation", scenario_id=10)
    found = stack.buffer.keyspace.generation_keys(1, 7)
    # on a cluster genbuf's own hash beside each untagged list, {K}:genbuf, too
    named = [keys.parse_chunks_key(key, stack.buffer.prefix) for key in found]
    lists = [key for key, parts in zip(found, named, strict=True) if parts and not parts.is_meta]
    target = stack.buffer.target
    own = {layout_of(target, key).state_key(key) for key in lists} - set(map(keys.meta_key, lists))
    assert len(lists) == 2 and own <= set(found)
    assert len(found) == 4 + len(own) == (6 if stack.name == "cluster" else 4)
    assert all(key.lstrip("{").startswith(stack.buffer.prefix) for key in found)
    assert all(":generation:7:" in key for key in found)
    assert stack.buffer.keyspace.delete(found) == len(found)


def test_push_many_transaction_and_script_paths_agree(stack: Stack) -> None:
    """Unsequenced (native RPUSH in MULTI/EXEC on one server, push.lua's list and count
    steps on a split list) and sequenced pushes (push.lua per batch) leave the same
    list, counters and TTLs."""
    sent = [f"{i:05d}-ñ".encode() for i in range(2300)]
    # the sequenced push needs one slot: on a cluster, the tagged template's buffer
    tagged = Stack(stack.name, {**stack.env, "GENERATION_KEY_TAGS": "true"}, stack.tmp_path)
    results = {}
    for gen, seq, buffer in ((8, None, stack.buffer), (9, 0, tagged.buffer)):
        pushed = buffer.push_many(1, gen, sent, scenario_id=4, seq=seq)
        snapshot = buffer.protocol.snapshot(pushed.key)
        chunks = [c for page in buffer.protocol.read(snapshot, 0, snapshot.end) for c in page]
        meta = {
            k: snapshot.meta[k]
            for k in ("chunk_count", "bytes", "organization_id", "scenario_id", "generation_id")
        }
        assert "first_chunk_at" in snapshot.meta and "last_chunk_at" in snapshot.meta
        assert 0 < buffer.keyspace.ttl_of(pushed.key) <= 86400
        assert pushed.bytes == sum(len(c) for c in sent)
        results[seq] = (pushed.length, pushed.appended, chunks, meta)
    tagged.close()
    assert results[None][:3] == results[0][:3] == (2300, 2300, sent)
    assert {**results[None][3], "generation_id": "-"} == {**results[0][3], "generation_id": "-"}
    assert results[None][3]["bytes"] == str(sum(len(c) for c in sent))


def test_push_chunk_reloads_a_flushed_script(stack: Stack) -> None:
    """After SCRIPT FLUSH (a restarted server) the hot path loads push.lua again, and so
    do the transactions of push_many."""
    stack.buffer.push_chunk(1, 10, b"a")
    stack.buffer.client.script_flush()
    stack.buffer.push_chunk(1, 10, b"b")
    stack.buffer.push_chunk(1, 10, b"c")
    stack.buffer.push_many(1, 10, [b"d", b"e"])
    stack.buffer.client.script_flush()
    stack.buffer.push_many(1, 10, [b"f", b"g"])  # counted apart, after the EXEC refused it
    key = stack.buffer.key_for(1, 10, None)
    assert stack.buffer.client.lrange(key, 0, -1) == [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    assert stack.buffer.protocol.snapshot(key).counted == 7


def test_push_chunk_from_threads_keeps_every_chunk(stack: Stack) -> None:
    """Threads sharing one buffer share its connection of writes sent once without
    crossing replies."""
    per_thread, threads = 150, 6

    def produce(worker: int) -> list[int]:
        return [stack.buffer.push_chunk(1, 11, f"{worker}:{i}").length for i in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        lengths = [n for result in pool.map(produce, range(threads)) for n in result]
    key = stack.buffer.key_for(1, 11, None)
    chunks = stack.buffer.client.lrange(key, 0, -1)
    assert sorted(lengths) == list(range(1, per_thread * threads + 1))  # each reply its own
    assert sorted(chunks) == sorted(f"{w}:{i}".encode() for w in range(6) for i in range(150))
    assert stack.buffer.protocol.snapshot(key).counted == per_thread * threads


def test_push_chunk_survives_a_killed_connection(servers: Stack) -> None:
    """The server drops the producer's connections (CLIENT KILL): the next push finds
    its connection closed before sending (a poll) and reconnects; push_many's pool too."""
    servers.buffer.push_chunk(1, 12, b"a")
    admin = redis.Redis.from_url(servers.settings.effective_redis_url())
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    servers.buffer.push_chunk(1, 12, b"b")
    servers.buffer.push_chunk(1, 12, b"c")
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    servers.buffer.push_many(1, 12, [b"d", b"e"])  # the dead socket is found before sending
    key = servers.buffer.key_for(1, 12, None)
    assert admin.lrange(key, 0, -1) == [b"a", b"b", b"c", b"d", b"e"]
    admin.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_push_chunk_in_a_forked_child_opens_its_own_connection(servers: Stack) -> None:
    """A child process must not write on the parent's socket: both keep their replies."""
    servers.buffer.push_chunk(1, 13, b"parent-1")  # the parent's connection is open
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            writes = servers.buffer.scripts._writes()
            assert writes is not None
            inherited = writes._conn
            lengths = [servers.buffer.push_chunk(1, 13, b"child").length for _ in range(20)]
            own = writes._conn not in (None, inherited)
            code = 0 if own and lengths == list(range(2, 22)) else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert servers.buffer.push_chunk(1, 13, b"parent-2").length == 22
    key = servers.buffer.key_for(1, 13, None)
    assert servers.buffer.client.lrange(key, 0, -1) == [b"parent-1", *[b"child"] * 20, b"parent-2"]


def test_sequenced_push_resends_calls_refused_with_noscript(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline that reaches a server without push.lua (restarted after redis-py loaded
    it) is refused whole: the batches go again, in order, none lost or doubled."""
    sequenced(stack)
    sent = [f"{i:04d}".encode() for i in range(PUSH_BATCH * 3 + 5)]
    stack.buffer.push_many(1, 14, sent[:2], seq=0)
    stack.buffer.client.script_flush()
    monkeypatch.setattr(redis.client.Pipeline, "load_scripts", lambda self: None)
    result = stack.buffer.push_many(1, 14, sent[1:], seq=1)  # one re-sent chunk, then new
    assert (result.appended, result.skipped, result.length) == (len(sent) - 2, 1, len(sent))
    key = stack.buffer.key_for(1, 14, None)
    assert stack.buffer.client.lrange(key, 0, -1) == sent


def test_push_many_spans_pipelined_transactions_in_order(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several MULTI/EXEC transactions in flight one after another: order, counters, bytes."""
    monkeypatch.setattr(layout, "TRANSACTION_BATCHES", 2)
    sent: list[bytes | str] = [f"{i:05d}-ñ" if i % 3 else f"{i:05d}".encode() for i in range(5500)]
    result = stack.buffer.push_many(1, 15, sent, scenario_id=9)
    as_bytes = [c if isinstance(c, bytes) else c.encode() for c in sent]
    assert (result.length, result.appended, result.bytes) == (5500, 5500, len(b"".join(as_bytes)))
    snapshot = stack.buffer.protocol.snapshot(result.key)
    assert stack.buffer.client.lrange(result.key, 0, -1) == as_bytes
    assert snapshot.counted == 5500 and snapshot.meta["bytes"] == str(result.bytes)
    assert snapshot.meta["scenario_id"] == "9"


def test_push_many_error_reply_leaves_the_connection_in_step(stack: Stack) -> None:
    """RPUSH onto a key of another type fails inside EXEC (and nothing is counted): a
    clear error (one line, as an operator gets it), and the next push on the same
    connections gets its own replies."""
    key = stack.buffer.key_for(1, 16, None)
    stack.buffer.client.set(key, "not a list")
    with pytest.raises(OperationFailed, match=r"another type.*WRONGTYPE"):
        stack.buffer.push_many(1, 16, [b"a", b"b"])
    assert stack.buffer.push_many(1, 17, [b"c", b"d"]).length == 2
    assert stack.buffer.push_chunk(1, 17, b"e").length == 3


@pytest.mark.backends("servers")
def test_push_many_connection_lost_mid_push_is_reported_not_retried(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops while a transaction is unconfirmed: exit-3 error naming what
    was confirmed and what is in doubt; nothing is sent twice; the next push reconnects."""
    monkeypatch.setattr(layout, "TRANSACTION_BATCHES", 1)
    real_execute = redis.client.Pipeline.execute
    calls = {"n": 0}

    def flaky_execute(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        replies = real_execute(self, *args, **kwargs)
        if calls["n"] == 2:  # the second transaction ran, its replies never arrive
            self.reset()
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return replies

    monkeypatch.setattr(redis.client.Pipeline, "execute", flaky_execute)
    sent = [f"{i:05d}".encode() for i in range(PUSH_BATCH * 3)]
    with pytest.raises(
        PushOutcomeUnknown, match=f"{PUSH_BATCH} chunks confirmed, up to {PUSH_BATCH}"
    ):
        stack.buffer.push_many(1, 18, sent)
    key = stack.buffer.key_for(1, 18, None)
    assert stack.buffer.client.lrange(key, 0, -1) == sent[: PUSH_BATCH * 2]  # none twice
    monkeypatch.setattr(redis.client.Pipeline, "execute", real_execute)
    assert stack.buffer.push_many(1, 18, [b"z"]).length == PUSH_BATCH * 2 + 1


def test_read_follows_a_concurrent_acknowledgement(stack: Stack) -> None:
    """Another compactor trims the head between two pages: positions stay absolute, so
    the read goes on with the right chunks; trimming past the read stops it cleanly."""
    sent = [f"{i:03d}".encode() for i in range(10)]
    key = stack.buffer.push_many(1, 19, sent).key
    snapshot = stack.buffer.protocol.snapshot(key, page=0)
    stream = snapshot.stream_id or ""
    pages = stack.buffer.protocol.read(snapshot, 4, 10, page=2)
    assert next(pages) == sent[4:6]
    stack.buffer.protocol.acknowledge(key, stream, 3, delete=False)  # trims positions 0..2
    assert [c for page in pages for c in page] == sent[6:10]

    again = stack.buffer.protocol.read(stack.buffer.protocol.snapshot(key, page=0), 3, 10, page=2)
    assert next(again) == sent[3:5]
    stack.buffer.protocol.acknowledge(key, stream, 6, delete=False)  # past position 5, still unread
    with pytest.raises(StreamChanged, match="trimmed while it was read"):
        next(again)


def test_read_stops_when_the_buffer_is_replaced(stack: Stack) -> None:
    """The buffer is deleted and a new stream starts between two pages: StreamChanged."""
    key = stack.buffer.push_many(1, 20, [b"a", b"b", b"c", b"d"]).key
    pages = stack.buffer.protocol.read(stack.buffer.protocol.snapshot(key, page=0), 0, 4, page=2)
    assert next(pages) == [b"a", b"b"]
    # every key of the buffer (on a cluster genbuf's own hash too): a new life begins
    stack.buffer.keyspace.delete([key, *layout_of(stack.buffer.target, key).hashes(key)])
    stack.buffer.push_many(1, 20, [b"x", b"y", b"z", b"w"])
    stack.buffer.protocol.snapshot(key)  # the new stream gets its own id
    with pytest.raises(StreamChanged, match="was replaced"):
        next(pages)


def test_read_uses_the_snapshot_page_only_where_it_begins(stack: Stack) -> None:
    """The snapshot's first page covers positions from its own start; a read elsewhere
    goes to Redis instead of returning that page."""
    sent = [f"{i:02d}".encode() for i in range(8)]
    key = stack.buffer.push_many(1, 21, sent).key
    snapshot = stack.buffer.protocol.snapshot(key)
    assert snapshot.first_page == sent and snapshot.first_page_at == 0
    assert [c for page in stack.buffer.protocol.read(snapshot, 3, 6) for c in page] == sent[3:6]
    assert [c for page in stack.buffer.protocol.read(snapshot, 0, 2) for c in page] == sent[0:2]


@pytest.fixture
def cutter(tmp_path: Path) -> Iterator[tuple[GenerationBuffer, ReplyCutter, redis.Redis]]:
    """A buffer on a private Redis reached through a proxy that can lose a reply, and a
    direct client of that Redis to look at what arrived."""
    require_server("redis")
    server = PrivateRedis(tmp_path)
    server.start()
    proxy = ReplyCutter(server.port)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    buffer = GenerationBuffer.from_settings(Settings(redis_url=url))  # type: ignore[call-arg]
    direct = redis.Redis.from_url(server.url)
    yield buffer, proxy, direct
    buffer.close()
    direct.close()
    proxy.close()
    server.kill()


def test_push_chunk_whose_reply_is_lost_is_not_sent_twice(
    cutter: tuple[GenerationBuffer, ReplyCutter, redis.Redis],
) -> None:
    """The server runs push_chunk's script and the connection dies before the reply:
    PushOutcomeUnknown (exit 3, in doubt: 1), never a silent resend that would append
    the chunk twice; the next push reconnects."""
    buffer, proxy, direct = cutter
    buffer.push_chunk(3, 1, b"a")
    proxy.cut_next_reply()
    with pytest.raises(PushOutcomeUnknown, match="up to 1 more may have been") as caught:
        buffer.push_chunk(3, 1, b"b")
    assert (caught.value.confirmed, caught.value.in_doubt, caught.value.exit_code) == (0, 1, 3)
    assert "seq=" in (caught.value.hint or "")
    key = buffer.key_for(3, 1, None)
    assert direct.lrange(key, 0, -1) == [b"a", b"b"]  # it ran, once
    assert buffer.push_chunk(3, 1, b"c").length == 3


def test_push_many_whose_reply_is_lost_names_what_is_in_doubt(
    cutter: tuple[GenerationBuffer, ReplyCutter, redis.Redis],
) -> None:
    """A MULTI/EXEC batch that ran but whose reply was lost: PushOutcomeUnknown counting
    the batch as in doubt; the chunks are in the list once."""
    buffer, proxy, direct = cutter
    buffer.push_many(3, 3, [b"warm"])  # push.lua is loaded: its SCRIPT LOAD is not cut below
    sent = [f"{i:04d}".encode() for i in range(50)]
    proxy.cut_next_reply(b"*")  # EXEC's answer: the transaction ran
    with pytest.raises(PushOutcomeUnknown) as caught:
        buffer.push_many(3, 2, sent)
    assert (caught.value.confirmed, caught.value.in_doubt) == (0, 50)
    assert direct.lrange(buffer.key_for(3, 2, None), 0, -1) == sent


def test_a_sequenced_push_whose_reply_is_lost_is_retried_safely(
    cutter: tuple[GenerationBuffer, ReplyCutter, redis.Redis],
) -> None:
    """The safe retry the error points at: a sequenced push resent after a lost reply
    (by redis-py, or by the caller) skips what arrived; every chunk once."""
    buffer, proxy, direct = cutter
    sent = [f"{i:04d}".encode() for i in range(30)]
    buffer.push_many(3, 4, sent[:10], seq=0)
    proxy.cut_next_reply()
    with contextlib.suppress(RedisUnavailable):  # either way, the caller pushes again
        buffer.push_many(3, 4, sent[10:20], seq=10)
    buffer.push_many(3, 4, sent[10:], seq=10)
    assert direct.lrange(buffer.key_for(3, 4, None), 0, -1) == sent


def test_cluster_push_whose_reply_is_lost_is_not_resent(
    cluster: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untagged buffer on a Redis Cluster (list and meta hash apart): push.lua's list
    step runs, its reply is lost. redis-py's cluster client would send it again (to the
    same or a promoted node) and append the batch twice; genbuf sends it to the key's
    node once and raises PushOutcomeUnknown."""
    buffer = cluster.buffer
    # scripts loaded, the key's node connected: the next reply read is the push's own
    buffer.push_many(3, 6, [b"warm"])
    real_read = redis.connection.AbstractConnection.read_response
    armed = {"on": False}

    def lose_the_reply(self: redis.connection.AbstractConnection, *a: Any, **k: Any) -> Any:
        reply = real_read(self, *a, **k)
        if armed["on"]:
            armed["on"] = False
            self.disconnect()
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return reply

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", lose_the_reply)
    sent = [f"{i:03d}".encode() for i in range(20)]
    armed["on"] = True
    with pytest.raises(PushOutcomeUnknown) as caught:
        buffer.push_many(3, 6, sent)
    assert (caught.value.confirmed, caught.value.in_doubt) == (0, 20)
    monkeypatch.undo()
    assert buffer.client.lrange(buffer.key_for(3, 6, None), 0, -1) == [b"warm", *sent]  # once


@pytest.mark.redis_server
def test_refused_credentials_name_the_password_settings(tmp_path: Path) -> None:
    """A wrong or missing Redis password: exit 3 as for the database, with a hint that
    names REDIS_PASSWORD, not one that sends the operator to the host and port."""
    require_server("redis")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        redis.Redis.from_url(server.url).config_set("requirepass", "secret")
        for auth in (":wrong@", ""):
            url = server.url.replace("redis://", f"redis://{auth}")
            buffer = GenerationBuffer.from_settings(Settings(redis_url=url))
            with pytest.raises(RedisUnavailable) as raised:
                buffer.push_chunk(14, 1, b"x")
            assert "refused the credentials" in raised.value.message
            assert "wrong" not in raised.value.message  # the password is masked
            assert raised.value.hint is not None and "REDIS_PASSWORD" in raised.value.hint
            buffer.close()
    finally:
        server.kill()


@pytest.mark.parametrize("seq", [None, 0], ids=["unsequenced", "sequenced"])
def test_bytes_like_chunks_are_pushed_as_their_bytes(redis_stack: Stack, seq: int | None) -> None:
    """A bytearray or a memoryview is a chunk of its bytes (a view of a non-byte array:
    its raw bytes), through push_chunk and push_many alike; the bytes counted are theirs."""
    if seq is not None:
        sequenced(redis_stack)
    buffer = redis_stack.buffer
    wide = memoryview(array.array("H", [1, 2]))  # 2 items, 4 bytes
    chunks: list[Any] = [bytearray(b"ab"), memoryview(b"cd"), wide, "é"]
    for offset, chunk in enumerate(chunks):
        one = buffer.push_chunk(1, 40, chunk, seq=None if seq is None else seq + offset)
        assert one.appended == 1
    many = buffer.push_many(1, 41, chunks, seq=seq)
    expected = [b"ab", b"cd", bytes(wide), "é".encode()]
    for key in (one.key, many.key):
        assert buffer.client.lrange(key, 0, -1) == expected
        assert buffer.protocol.snapshot(key).meta["bytes"] == "10"


@pytest.mark.parametrize("bad", [5, None, 1.5, True, object()], ids=lambda v: type(v).__name__)
def test_a_chunk_of_another_type_is_a_type_error_before_anything_is_sent(
    redis_stack: Stack, bad: object
) -> None:
    """push_chunk, push_many (the bad chunk anywhere, past the first batch too, from a
    generator too) and a str given as the list of chunks: a TypeError naming the type,
    and nothing reaches Redis (no key)."""
    buffer = redis_stack.buffer
    name = type(bad).__name__
    with pytest.raises(TypeError, match=f"not {name}"):
        buffer.push_chunk(1, 42, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"not {name}"):
        buffer.push_chunk(1, 42, bad, seq=0)  # type: ignore[arg-type]
    late = [b"x"] * (PUSH_BATCH + 5) + [bad]
    with pytest.raises(TypeError, match=f"not {name}"):
        buffer.push_many(1, 42, late)  # type: ignore[list-item]
    with pytest.raises(TypeError, match=f"not {name}"):
        buffer.push_many(1, 42, iter(late))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one str"):
        buffer.push_many(1, 42, "text")
    assert not buffer.client.exists(buffer.key_for(1, 42, None))
    assert not buffer.client.exists(keys.meta_key(buffer.key_for(1, 42, None)))


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[tuple[GenerationBuffer, redis.Redis]]:
    """A buffer on a private Redis whose proto-max-bulk-len is 1 MiB (the least it
    takes), and a direct client of it."""
    require_server("redis")
    server = PrivateRedis(tmp_path)
    server.start()
    direct = redis.Redis.from_url(server.url)
    direct.config_set("proto-max-bulk-len", "1mb")
    buffer = GenerationBuffer.from_settings(Settings(redis_url=server.url))  # type: ignore[call-arg]
    yield buffer, direct
    buffer.close()
    direct.close()
    server.kill()


_OVER_PATHS = {
    "push_chunk": lambda b, gen, big: b.push_chunk(3, gen, big),
    "push_chunk_seq": lambda b, gen, big: b.push_chunk(3, gen, big, seq=0),
    "push_many": lambda b, gen, big: b.push_many(3, gen, [b"a", big]),
    "push_many_seq": lambda b, gen, big: b.push_many(3, gen, [b"a", big], seq=0),
}


@pytest.mark.parametrize("path", sorted(_OVER_PATHS))
@pytest.mark.parametrize("size", [(1 << 20) + 10_000, 8 << 20], ids=["just_over", "well_over"])
def test_a_chunk_over_the_servers_bulk_limit_is_refused_not_in_doubt(
    tight: tuple[GenerationBuffer, redis.Redis], path: str, size: int
) -> None:
    """A chunk longer than proto-max-bulk-len: Redis refuses the command before running
    it (an error reply, or the connection closed while the chunk is still being sent).
    That is a definite refusal (exit 1, naming the limit), never PushOutcomeUnknown or
    RedisUnavailable (a producer retrying those would loop); nothing is in Redis, and
    the next push works."""
    buffer, direct = tight
    with pytest.raises(OperationFailed) as caught:
        _OVER_PATHS[path](buffer, 1, b"x" * size)
    assert not isinstance(caught.value, RedisUnavailable) and caught.value.exit_code == 1
    assert "proto-max-bulk-len" in caught.value.message, caught.value.message
    key = buffer.key_for(3, 1, None)
    assert not direct.exists(key) and not direct.exists(keys.meta_key(key))
    assert buffer.push_chunk(3, 1, b"ok").length == 1


def test_genbuf_push_of_a_line_over_the_bulk_limit_exits_1(
    tight: tuple[GenerationBuffer, redis.Redis],
) -> None:
    """genbuf push of a line Redis refuses: one error line naming the limit, exit 1."""
    url = tight[0].url
    done = run_genbuf(["push", "3", "2"], {"REDIS_URL": url}, stdin=b"x" * (8 << 20))
    assert done.returncode == 1, done.stderr
    assert "proto-max-bulk-len" in done.stderr and "Traceback" not in done.stderr
    assert not tight[1].exists(tight[0].key_for(3, 2, None))


def test_a_push_whose_connection_fails_while_it_is_written_is_not_in_doubt(
    cutter: tuple[GenerationBuffer, ReplyCutter, redis.Redis],
) -> None:
    """The connection is reset while a push is still being written (a 32 MiB chunk,
    under the server's limit): Redis never received the command whole, so it did not
    run. A plain RedisUnavailable saying nothing was appended (a retry is safe), not
    PushOutcomeUnknown; the chunk is not in Redis."""
    buffer, proxy, direct = cutter
    buffer.push_chunk(3, 7, b"first")
    for push in (
        lambda chunk: buffer.push_chunk(3, 7, chunk),
        lambda chunk: buffer.push_many(3, 7, [b"a", chunk]),
    ):
        proxy.cut_next_request(b"QQQQ")
        with pytest.raises(RedisUnavailable) as caught:
            push(b"Q" * (32 << 20))
        assert not isinstance(caught.value, PushOutcomeUnknown), caught.value.message
        assert "none of it was appended" in caught.value.message, caught.value.message
    assert direct.lrange(buffer.key_for(3, 7, None), 0, -1) == [b"first"]


def test_a_chunk_over_the_bulk_limit_of_a_cluster_node_is_refused(cluster: Stack) -> None:
    """On a Redis Cluster (the untagged keys' split layout, and the key's node asked for
    its limit): a chunk over proto-max-bulk-len is OperationFailed, nothing appended."""
    buffer = cluster.buffer
    key = buffer.key_for(3, 8, None)
    client: Any = buffer.client
    node = client.get_node_from_key(key)
    before = client.config_get("proto-max-bulk-len", target_nodes=node)["proto-max-bulk-len"]
    client.config_set("proto-max-bulk-len", "1mb", target_nodes=node)
    try:
        for push in (
            lambda chunk: buffer.push_chunk(3, 8, chunk),
            lambda chunk: buffer.push_many(3, 8, [b"a", chunk]),
        ):
            with pytest.raises(OperationFailed, match="proto-max-bulk-len"):
                push(b"x" * (8 << 20))
    finally:
        client.config_set("proto-max-bulk-len", before, target_nodes=node)
    assert not client.exists(key)
