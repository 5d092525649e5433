"""genbuf push sends as it reads, and a signal pushes what was read before it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from genbuffer.errors import Interrupted
from genbuffer.ingest.push import PushSummary, StopRequest, push_lines
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


def test_a_push_into_the_in_process_redis_warns_that_the_chunks_vanish(embedded: Stack) -> None:
    """REDIS_URL=memory:// (asked for, never a default): the push works, and says its
    chunks end with the command, so that a mistyped set-up is not taken for a push."""
    done = embedded.cli("push", "1", "1", input=b"x\n")
    assert done.exit_code == 0, done.output
    assert "in-process Redis: the chunks pushed are gone" in done.stderr
