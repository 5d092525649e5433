"""genbuf push: a byte stream into a buffer, one chunk a line, newlines kept.

Lines are sent as they are read: a batch goes to Redis once it holds FLUSH_LINES
lines or FLUSH_BYTES bytes, or FLUSH_SECONDS after its first line arrived, so a
slow producer's lines are in Redis within a tenth of a second. Asked to stop
(SIGTERM, Ctrl-C), it pushes what it has read, then says how many chunks went.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from genbuffer import keys
from genbuffer.documents import Document
from genbuffer.errors import Interrupted, OperationFailed
from genbuffer.redis import GenerationBuffer

__all__ = ["FLUSH_SECONDS", "PushSummary", "StopRequest", "push_lines"]

FLUSH_SECONDS = 0.1  # a line waits at most this long before it is sent
FLUSH_LINES = 50_000  # … or fewer, once a batch holds this many lines
FLUSH_BYTES = 16 * 1024 * 1024  # … or this many bytes
READ_BYTES = 1 << 20


class PushSummary(Document):
    """What `genbuf push --json` prints."""

    ok: bool = True
    organization_id: int
    generation_id: int
    scenario_id: int | None
    key: str
    chunks: int
    bytes: int
    length: int
    finished: bool


class StopRequest:
    """Set from a signal handler: stop reading, push what was read, say so."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def request(self, signal_name: str) -> None:
        """Ask the push to stop, naming the signal that asked."""
        self.signal_name = signal_name

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self.signal_name is not None


class _Batches:
    """Lines read so far and not yet sent, and when the oldest of them arrived."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0
        self.since: float | None = None

    def add(self, lines: list[bytes]) -> None:
        if lines and self.since is None:
            self.since = time.monotonic()
        self.lines += lines
        self.size += sum(map(len, lines))

    def due(self) -> bool:
        """Whether the batch should go now (full, or waited long enough)."""
        if not self.lines:
            return False
        waited = self.since is not None and time.monotonic() - self.since >= FLUSH_SECONDS
        return waited or len(self.lines) >= FLUSH_LINES or self.size >= FLUSH_BYTES

    def take(self) -> list[bytes]:
        lines, self.lines, self.size, self.since = self.lines, [], 0, None
        return lines


def _lines_of(fd: int, stop: StopRequest, batches: _Batches) -> Iterator[None]:
    """Read ``fd`` into ``batches`` line by line; yield whenever something may be due.

    select() wakes up at least every FLUSH_SECONDS, so a waiting batch is sent and a
    stop request is seen even while the producer writes nothing.

    Each read is searched once: the line it continues is kept in pieces (none holds a
    line ending) and joined once, when a read ends it, so a line of any length costs
    time and memory in proportion to its length (it was copied whole at each read).
    """
    started: list[bytes] = []  # the line begun in earlier reads, in pieces
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], FLUSH_SECONDS)
        if ready:
            data = os.read(fd, READ_BYTES)
            if not data:
                break
            if b"\n" not in data and b"\r" not in data:  # the line goes on
                started.append(data)
            else:
                lines = data.splitlines(keepends=True)  # the first ends a line
                if started:
                    started.append(lines[0])
                    lines[0] = b"".join(started)
                    started = []
                if not lines[-1].endswith((b"\n", b"\r")):
                    started.append(lines.pop())
                batches.add(lines)
        yield
    if started:  # a last line without a newline, or half a line read when asked to stop
        batches.add([b"".join(started)])


def _file_descriptor(stream: BinaryIO | Iterable[bytes]) -> int | None:
    """The stream's file descriptor, if it has a real one (select() needs it)."""
    try:
        return int(stream.fileno())  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return None


def _fallback_lines(stream: Iterable[bytes], batches: _Batches) -> Iterator[None]:
    """Streams without a file descriptor (tests, wrappers): line by line."""
    for line in stream:
        batches.add([line])
        yield


def push_lines(
    buffer: GenerationBuffer,
    organization_id: int,
    generation_id: int,
    stream: BinaryIO | Iterable[bytes],
    *,
    scenario_id: int | None = None,
    finish: bool = False,
    stop: StopRequest | None = None,
) -> PushSummary:
    """Push every line of ``stream`` as a chunk, sending as it reads.

    Lines keep their newline (a last line without one stays as it is), so the
    compacted artifact reproduces the input byte for byte. When ``stop`` is set
    (a signal), what was read is pushed and Interrupted says how many chunks went.
    """
    stop = stop or StopRequest()
    batches = _Batches()
    key = buffer.key_for(organization_id, generation_id, scenario_id)
    chunks = size = length = 0

    def send() -> None:
        nonlocal chunks, size, length
        lines = batches.take()
        if lines:
            result = buffer.push_many(organization_id, generation_id, lines, scenario_id)
            chunks += result.appended + result.skipped
            size += result.bytes or 0
            length = result.length

    fd = _file_descriptor(stream)
    reading = _lines_of(fd, stop, batches) if fd is not None else _fallback_lines(stream, batches)
    for _ in reading:
        if batches.due():
            send()
    send()
    if stop.signal_name is not None:
        raise Interrupted(
            f"stopped by {stop.signal_name}: pushed {chunks} chunk{'' if chunks == 1 else 's'} "
            f"({size} bytes) to {key}, "
            "everything read until then; the stream was not marked finished",
            signal_name=stop.signal_name,
        )
    if finish:
        if not chunks and not buffer.keyspace.existing_keys([key, keys.meta_key(key)]):
            # (finish() would mark nothing, and announce a buffer no worker finds)
            raise OperationFailed(
                f"nothing to finish: stdin was empty and there is no buffer at {key}",
                hint="push the generation's chunks (one a line) with --finish, or check the "
                "ids, --scenario-id and REDIS_PREFIX",
            )
        buffer.finish(organization_id, generation_id, scenario_id)
    return PushSummary(
        organization_id=organization_id,
        generation_id=generation_id,
        scenario_id=scenario_id,
        key=key,
        chunks=chunks,
        bytes=size,
        length=length or buffer.keyspace.list_length(key),
        finished=finish,
    )
