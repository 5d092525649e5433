"""tail: a buffer's chunks as they arrive, in push order, until its stream is finished."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from genbuffer import keys
from genbuffer.errors import AmbiguousBuffer, DependencyUnavailable, NothingToCompact
from genbuffer.redis import GenerationBuffer

__all__ = ["follow_buffer", "tail_key"]


def tail_key(
    buffer: GenerationBuffer, organization_id: int, generation_id: int, scenario_id: int | None
) -> str | None:
    """The chunks key to follow: the one given, else the only one found (SCAN)."""
    if scenario_id is not None:
        return buffer.read_key_for(organization_id, generation_id, scenario_id)
    found = {
        keys.chunks_key_of(name)
        for name in buffer.keyspace.generation_keys(organization_id, generation_id, None)
        if keys.parse_chunks_key(name, buffer.prefix) is not None  # not genbuf's own hash
    }
    if len(found) > 1:
        raise AmbiguousBuffer(
            f"generation {generation_id} has {len(found)} buffers: {', '.join(sorted(found))}",
            hint="pick one with --scenario-id",
        )
    return found.pop() if found else None


def follow_buffer(
    buffer: GenerationBuffer,
    key: str,
    *,
    follow: bool,
    poll: float = 0.2,
    note: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[bytes]]:
    """Pages of the buffer's chunks in push order, from its first chunk still in Redis.

    Without ``follow``: what is there now. With it: also what arrives, until the
    producer marks the stream finished and all of it was shown, or the buffer is
    deleted (compacted); a buffer that does not exist yet is waited for, and so is a
    Redis that stopped answering (said once, in one line, when it stops).
    """
    position = 0
    stream: str | None = None
    seen = False
    outage = False
    while True:
        try:
            page = buffer.tailer.page(key, position)
        except DependencyUnavailable as error:
            if not follow:
                raise
            if not outage:
                note(f"{error.message.rstrip('.')}; waiting for it (Ctrl-C ends)")
            outage = True
            sleep(max(poll, 1.0))
            continue
        if outage:
            note("Redis answers again: following on")
            outage = False
        if not page.exists and not page.chunks:
            if seen or not follow:
                if not seen:
                    raise NothingToCompact(
                        f"no Redis buffer at {key}",
                        hint="check the ids and REDIS_PREFIX, or add --follow to wait for it",
                    )
                # gone before its end was read: compacted and deleted, or expired
                note(
                    f"the buffer is gone after {position} chunks, before its stream was seen "
                    "finished (compacted and deleted, or expired): the rest, if compacted, is "
                    "in genbuf show-generation"
                )
                return
            sleep(poll)
            continue
        seen = True
        if stream is not None and page.stream_id not in (None, stream):
            note("a new stream of this generation began: following it from its start")
            position = 0
            stream = page.stream_id
            continue
        stream = page.stream_id or stream
        if position < page.trimmed:
            note(
                f"{page.trimmed - position} chunks were compacted and trimmed before they "
                "were read: see genbuf show-generation"
            )
            position = page.trimmed
        if page.chunks:
            yield page.chunks
            position += len(page.chunks)
            continue
        if not follow or page.finished:
            return
        sleep(poll)
