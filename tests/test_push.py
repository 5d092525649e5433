"""genbuf push sends as it reads, and a signal pushes what was read before it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import genbuffer
from genbuffer import keys
from genbuffer.errors import Interrupted
from genbuffer.ingest.push import (
    READ_BYTES,
    PushSummary,
    StopRequest,
    _Batches,
    _lines_of,
    push_lines,
)
from tests.conftest import Stack
from tests.support.runner import GENBUF
from tests.support.wait import wait_until


def _chunks(stack: Stack, gen: int) -> list[bytes]:
    key = stack.buffer.key_for(3, gen, None)
    return list(stack.buffer.client.lrange(key, 0, -1))


@contextmanager
def _pushing(stack: Stack, gen: int, read_end: int, stop: StopRequest) -> Iterator[list[object]]:
    """push_lines reading the pipe ``read_end`` in a thread for the block; what it
    returned or raised, once the block has ended (and the thread with it)."""
    outcome: list[object] = []

    def push() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            try:
                outcome.append(push_lines(stack.buffer, 3, gen, stream, stop=stop))
            except Interrupted as stopped:
                outcome.append(stopped)

    thread = threading.Thread(target=push)
    thread.start()
    try:
        yield outcome
    finally:
        stop.request("the test's end")  # (only read when it has not ended already)
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_slow_producers_lines_arrive_while_it_writes(embedded: Stack) -> None:
    """A line is in Redis while its producer is still writing, long before the stream
    ends (within FLUSH_SECONDS: the wait allows for a loaded machine)."""
    read_end, write_end = os.pipe()
    with _pushing(embedded, 7, read_end, StopRequest()) as outcome:
        os.write(write_end, b'{"a": 1,\n')
        wait_until(lambda: _chunks(embedded, 7), 10, "the first line in Redis")
        assert _chunks(embedded, 7) == [b'{"a": 1,\n']  # and the stream still open
        os.write(write_end, b'"b": 2}\n')
        os.close(write_end)
        wait_until(lambda: outcome, 10, "push_lines to end with the stream")
    (summary,) = outcome
    assert isinstance(summary, PushSummary) and summary.chunks == 2
    assert _chunks(embedded, 7) == [b'{"a": 1,\n', b'"b": 2}\n']


def test_a_stop_request_pushes_what_was_read_then_says_so(embedded: Stack) -> None:
    """Stopped mid-stream: every line read (half a line too) is pushed; exit 143."""
    read_end, write_end = os.pipe()
    stop = StopRequest()
    with _pushing(embedded, 8, read_end, stop) as outcome:
        os.write(write_end, b"one\ntwo\nhal")  # one write: read whole, "hal" kept back
        wait_until(lambda: len(_chunks(embedded, 8)) == 2, 10, "the two whole lines in Redis")
        stop.request("SIGTERM")
        wait_until(lambda: outcome, 10, "push_lines to stop")
    os.close(write_end)
    (raised,) = outcome
    assert isinstance(raised, Interrupted)
    assert raised.exit_code == 143 and "pushed 3 chunks" in raised.message
    assert _chunks(embedded, 8) == [b"one\n", b"two\n", b"hal"]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_a_real_push_process(servers: Stack, sig: int, code: int) -> None:
    """kill -TERM / Ctrl-C a `genbuf push` reading a pipe: the lines it read are in Redis,
    it exits 143 / 130 and says how many chunks it pushed."""
    env = {**os.environ, **servers.env}
    proc = subprocess.Popen(
        [GENBUF, "push", "3", "9"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"first\nsecond\n")
    proc.stdin.flush()
    # sent as read: no need to close stdin first
    wait_until(lambda: len(_chunks(servers, 9)) == 2, 10, "both lines in Redis")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert b"pushed 2 chunks" in stderr and b"Traceback" not in stderr
    assert _chunks(servers, 9) == [b"first\n", b"second\n"]


@pytest.mark.parametrize(
    ("lines", "options", "said"),
    [
        ("a\n", (), "pushed 1 chunk (2 bytes)"),
        ("a\nb\n", ("--finish",), "pushed 2 chunks (4 bytes)"),
    ],
)
def test_push_says_what_it_did_in_words(
    embedded: Stack, lines: str, options: tuple[str, ...], said: str
) -> None:
    """One chunk is "1 chunk"; with --finish the line says the stream is marked
    finished (it said neither)."""
    gen = embedded.repository.create_generation(3)
    done = embedded.cli("push", "3", str(gen), *options, input=lines)
    assert done.exit_code == 0 and said in done.stdout, done.output
    assert ("marked finished" in done.stdout) == bool(options), done.stdout


def test_finish_with_nothing_pushed_and_no_buffer_is_refused(embedded: Stack) -> None:
    """push --finish with an empty stdin and no buffer said it marked the stream
    finished (nothing was marked, and the announcement sent a worker after nothing):
    one line, exit 1, nothing announced. With a buffer there it marks it, as before."""
    gen = embedded.repository.create_generation(3)
    refused = embedded.cli("push", "3", str(gen), "--finish", input="")
    assert refused.exit_code == 1 and "nothing to finish" in refused.stderr, refused.output
    assert embedded.buffer.client.keys("*") == []
    embedded.buffer.push_many(3, gen, [b"[1]"])
    marked = embedded.cli("push", "3", str(gen), "--finish", input="")
    assert marked.exit_code == 0 and "marked finished" in marked.stdout, marked.output
    key = keys.meta_key(embedded.buffer.key_for(3, gen, None))
    assert embedded.buffer.client.hexists(key, "finished_at")


def test_a_push_into_the_in_process_redis_warns_that_the_chunks_vanish(embedded: Stack) -> None:
    """REDIS_URL=memory:// (asked for, never a default): the push works, and says its
    chunks end with the command, so that a mistyped set-up is not taken for a push."""
    done = embedded.cli("push", "1", "1", input=b"x\n")
    assert done.exit_code == 0, done.output
    assert "in-process Redis: the chunks pushed are gone" in done.stderr


_PUSH_LUA = (Path(genbuffer.__file__).parent / "lua" / "push.lua").read_text(encoding="utf-8")
_LIST = "app:scenario_planning:org:3:generation:{gen}:chunks"


def _key(stack: Stack, gen: int) -> str:
    """A chunks key under the test's prefix (its keys are removed after it)."""
    return stack.buffer.prefix + _LIST.format(gen=gen)


def _fresh_gen() -> int:
    """A generation id no other test uses (the embedded server lives for the session)."""
    return uuid.uuid4().int % 10**12 + 1


def _push_lua(stack: Stack, keys: list[str], argv: list[object]) -> object:
    """push.lua called as a producer in another language would (the PHP package)."""
    try:
        return stack.buffer.client.eval(_PUSH_LUA, len(keys), *keys, *argv)
    except redis.exceptions.ResponseError as refused:
        return refused


def _head(step: str, ttl: object = 60, org: object = 3, gen: object = 1) -> list[object]:
    return [step, ttl, "2026-01-01T00:00:00.000000Z", org, "", gen]


@pytest.mark.backends("embedded", "servers")
@pytest.mark.parametrize(
    ("step", "argv"),
    [
        ("push", ["", 1, "", "", "a"]),  # a TTL of 0 or less deleted the list pushed
        ("finish", ["", "", "", ""]),  # … or the meta hash of a list-only producer
    ],
)
@pytest.mark.parametrize("ttl", [0, -1, "1.5", "x", 2**62])
def test_push_lua_refuses_a_bad_ttl_before_writing(
    stack: Stack, step: str, argv: list[object], ttl: object
) -> None:
    """A TTL Redis's EXPIRE would refuse or take as "delete now": refused before any
    write (a Lua error does not undo what ran before it: a list without TTL and
    uncounted, or a meta hash without one, or a chunk gone while the reply said
    appended)."""
    gen = _fresh_gen()
    client, key = stack.buffer.client, _key(stack, gen)
    client.rpush(key, "old")
    client.expire(key, 100)
    reply = _push_lua(stack, [key, key + ":meta"], [*_head(step, ttl, gen=gen), *argv])
    assert isinstance(reply, redis.exceptions.ResponseError), reply
    assert client.lrange(key, 0, -1) == [b"old"] and client.ttl(key) > 0
    assert not client.exists(key + ":meta")


@pytest.mark.backends("embedded", "servers")
@pytest.mark.parametrize(
    ("field", "index", "value"),
    [
        ("seq", 6, "1e300"),  # became seq_base: every later chunk skipped as a retry
        ("seq", 6, str(2**60)),  # past 2**53 a Lua number is not the integer
        ("seq", 6, "-5"),
        ("total_bytes", 7, "-100"),
        ("organization_id", 3, "0"),
        ("generation_id", 5, "1 OR 2"),
    ],
)
def test_push_lua_refuses_a_malformed_number(
    stack: Stack, field: str, index: int, value: str
) -> None:
    """Sequence numbers, byte counts and ids are non-negative integers a Lua number
    holds exactly (ids positive): anything else refused, nothing written."""
    gen = _fresh_gen()
    client, key = stack.buffer.client, _key(stack, gen)
    argv: list[object] = [*_head("push", gen=gen), "", 1, "", "", "a"]
    argv[index] = value
    reply = _push_lua(stack, [key, key + ":meta"], argv)
    assert isinstance(reply, redis.exceptions.ResponseError), (field, reply)
    assert not client.exists(key, key + ":meta")


@pytest.mark.backends("embedded", "servers")
def test_push_lua_refuses_a_negative_count(stack: Stack) -> None:
    """Step 'rpushed' with appended -7 took chunk_count below the list's length."""
    gen = _fresh_gen()
    client, key = stack.buffer.client, _key(stack, gen)
    _push_lua(stack, [key, key + ":meta"], [*_head("push", gen=gen), "", 1, "", "", "a"])
    reply = _push_lua(stack, [key, key + ":meta"], [*_head("rpushed", gen=gen), "", 0, "-7", ""])
    assert isinstance(reply, redis.exceptions.ResponseError), reply
    assert client.hget(key + ":meta", "chunk_count") == b"1"


@pytest.mark.backends("embedded", "servers")
@pytest.mark.parametrize(
    ("step", "keys", "argv"),
    [
        ("push", ["t:" + _LIST.format(gen=1), "t:victim"], ["", 1, "", "", "z"]),
        ("list", ["t:" + _LIST.format(gen=1), "t:victim"], ["", 1, "", "", "z"]),
        ("finish", ["t:" + _LIST.format(gen=1), "t:victim"], ["", "", "", "5"]),
        ("count", ["t:victim", "t:victim"], ["", 1, "1", "1"]),  # (under the test's prefix)
    ],
)
def test_push_lua_writes_one_buffers_keys_only(
    stack: Stack, step: str, keys: list[str], argv: list[object]
) -> None:
    """A KEYS[2] that is not KEYS[1]'s meta hash (finished_at, the counters written
    into another key): refused, nothing written."""
    client = stack.buffer.client
    keys = [stack.buffer.prefix + key for key in keys]
    reply = _push_lua(stack, keys, [*_head(step, gen=1), *argv])
    assert isinstance(reply, redis.exceptions.ResponseError), reply
    assert not client.exists(*keys)


@pytest.mark.backends("embedded", "servers")
def test_push_lua_finish_before_a_push_and_twice(stack: Stack) -> None:
    """finish before any chunk writes nothing; finished twice, the counters stay."""
    gen = _fresh_gen()
    client, key = stack.buffer.client, _key(stack, gen)
    finish = [*_head("finish", gen=gen), "", "", "", ""]
    assert _push_lua(stack, [key, key + ":meta"], finish) == [0, 0, 0]
    assert not client.exists(key, key + ":meta")
    _push_lua(stack, [key, key + ":meta"], [*_head("push", gen=gen), "", 1, "", "", "a"])
    for _ in range(2):
        assert _push_lua(stack, [key, key + ":meta"], finish) == [1, 0, 0]
    meta = client.hgetall(key + ":meta")
    assert (meta[b"chunk_count"], meta[b"bytes"]) == (b"1", b"1") and b"finished_at" in meta


def _read_in(pieces: list[bytes]) -> tuple[list[bytes], int]:
    """_lines_of reading a pipe that gets ``pieces`` one per read (each written into the
    empty pipe, then one step of the reader); the lines it made, and the most memory
    (tracemalloc) it held beyond what the test did while the pieces were read."""
    read_end, write_end = os.pipe()
    batches = _Batches()
    reading = _lines_of(read_end, StopRequest(), batches)
    lines: list[bytes] = []
    tracemalloc.start()
    try:
        for piece in pieces:
            assert os.write(write_end, piece) == len(piece)  # (a piece fits in the pipe)
            next(reading)  # select() says ready: one read takes the whole piece
            lines += batches.take()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        os.close(write_end)
    for _ in reading:  # the end of the stream: the last line without a newline
        pass
    os.close(read_end)
    return lines + batches.take(), peak


def _reference_lines(pieces: list[bytes]) -> list[bytes]:
    """The lines genbuf push has always made of ``pieces`` read one after the other: each
    read split with what was left of the one before (a line is a piece of bytes.splitlines,
    so "\\r\\n" is one ending, but a "\\r" ending a read ends a line at once)."""
    lines, tail = [], b""
    for piece in pieces:
        split = (tail + piece).splitlines(keepends=True)
        tail = split.pop() if not split[-1].endswith((b"\n", b"\r")) else b""
        lines += split
    return lines + ([tail] if tail else [])


_PIECES = st.lists(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"a", b"\n").replace(b"b", b"\r")),
    max_size=12,
)


@given(pieces=_PIECES)
@settings(max_examples=200, deadline=None)
def test_lines_are_split_as_before_however_the_stream_is_read(pieces: list[bytes]) -> None:
    """Any bytes (newlines and carriage returns frequent), in any pieces: the same lines
    as the reference, which together are the input byte for byte; where no read ends
    in "\\r", the lines of the whole input, however it was cut."""
    lines, _ = _read_in(pieces)
    assert lines == _reference_lines(pieces)
    assert b"".join(lines) == b"".join(pieces)
    if not any(piece.endswith(b"\r") for piece in pieces):
        assert lines == b"".join(pieces).splitlines(keepends=True)


def test_one_long_line_is_read_in_bounded_extra_memory() -> None:
    """A line of 8 MiB with no newline, read 64 KiB at a time: while it is read, the
    reader holds its pieces and little more, never a copy of all of it for each read
    (which made 200 MB take 39 s and 831 MB); the line comes out whole, once."""
    size, piece = 8 << 20, 64 << 10
    line = b"x" * size
    pieces = [line[start : start + piece] for start in range(0, size, piece)]
    lines, peak = _read_in(pieces)
    assert lines == [line]
    # beyond the line: a read's buffer (os.read allocates READ_BYTES, then shrinks it)
    assert peak < size + 2 * READ_BYTES, f"{peak} bytes held to read {size}"
