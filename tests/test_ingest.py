"""genbuf push sends as it reads, and a signal pushes what was read before it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from genbuffer.errors import Interrupted
from genbuffer.ingest import StopRequest, push_lines
from tests.conftest import Stack
from tests.support.runner import GENBUF


def _chunks(stack: Stack, gen: int) -> list[bytes]:
    key = stack.buffer.key_for(3, gen, None)
    return list(stack.buffer.client.lrange(key, 0, -1))


def test_a_slow_producers_lines_arrive_while_it_writes(embedded: Stack) -> None:
    """A line is in Redis within a fraction of a second, long before the stream ends."""
    read_end, write_end = os.pipe()
    seen_before_end: list[list[bytes]] = []

    def produce() -> None:
        os.write(write_end, b'{"a": 1,\n')
        time.sleep(0.5)
        seen_before_end.append(_chunks(embedded, 7))
        os.write(write_end, b'"b": 2}\n')
        os.close(write_end)

    writer = threading.Thread(target=produce)
    writer.start()
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        summary = push_lines(embedded.buffer, 3, 7, stream)
    writer.join()
    assert seen_before_end == [[b'{"a": 1,\n']]
    assert summary.chunks == 2 and _chunks(embedded, 7) == [b'{"a": 1,\n', b'"b": 2}\n']


def test_a_stop_request_pushes_what_was_read_then_says_so(embedded: Stack) -> None:
    """Stopped mid-stream: every line read (half a line too) is pushed; exit 143."""
    read_end, write_end = os.pipe()
    stop = StopRequest()

    def produce() -> None:
        os.write(write_end, b"one\ntwo\nhal")
        time.sleep(0.3)
        stop.request("SIGTERM")

    writer = threading.Thread(target=produce)
    writer.start()
    with os.fdopen(read_end, "rb", buffering=0) as stream, pytest.raises(Interrupted) as raised:
        push_lines(embedded.buffer, 3, 8, stream, stop=stop)
    writer.join()
    os.close(write_end)
    assert raised.value.exit_code == 143 and "pushed 3 chunks" in raised.value.message
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
    deadline = time.monotonic() + 10
    while len(_chunks(servers, 9)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # sent as read: no need to close stdin first
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert b"pushed 2 chunks" in stderr and b"Traceback" not in stderr
    assert _chunks(servers, 9) == [b"first\n", b"second\n"]
