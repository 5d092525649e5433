"""Reading a buffer as it grows, for `genbuf tail`: pages by absolute position, safe
against a compaction trimming the head of the list meanwhile."""

from __future__ import annotations

from dataclasses import dataclass

from genbuffer.errors import OperationFailed
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, redis_errors, text
from genbuffer.redis.layout import layout_of
from genbuffer.redis.meta import as_count

__all__ = ["TailPage", "Tailer"]

TAIL_PAGE = 1000  # chunks read per round trip


@dataclass(frozen=True)
class TailPage:
    """Chunks from one position on, and the state of the buffer when they were read."""

    chunks: list[bytes]
    stream_id: str | None  # the buffer life they belong to
    trimmed: int  # chunks of that life acknowledged and gone from the head
    finished: bool  # the producer marked the stream finished
    exists: bool  # the list exists


class Tailer:
    """Position-based reads of one list (read-only)."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target

    def page(self, key: str, position: int, count: int = TAIL_PAGE) -> TailPage:
        """Up to ``count`` chunks from absolute ``position`` of the buffer's current life.

        LRANGE runs in a MULTI with the meta fields its index depends on; if an
        acknowledgement moved `trimmed` meanwhile, it is read again. Chunks below
        `trimmed` are gone (compacted): the page then starts at `trimmed`.
        """
        layout = layout_of(self.target, key)
        meta = layout.state_key(key)
        wanted = [fields.STREAM_ID, fields.TRIMMED, fields.FINISHED_AT]
        with redis_errors(self.target.url):
            trimmed = _trimmed(meta, self.target.client.hget(meta, fields.TRIMMED))
            # the producer's hash apart from genbuf's (a split list's): read on its own
            marked = any(
                self.target.client.hget(name, fields.FINISHED_AT) is not None
                for name in layout.hashes(key)
                if name != meta
            )
            while True:
                start = max(position, trimmed) - trimmed
                pipe = self.target.client.pipeline(transaction=True)
                pipe.hmget(meta, wanted)
                pipe.lrange(key, start, start + count - 1)
                pipe.exists(key)
                (stream, seen, finished), chunks, exists = pipe.execute()
                seen_trimmed = _trimmed(meta, seen)
                if seen_trimmed == trimmed:
                    return TailPage(
                        chunks=list(chunks),
                        stream_id=None if stream is None else text(stream),
                        trimmed=trimmed,
                        finished=finished is not None or marked,
                        exists=bool(exists),
                    )
                trimmed = seen_trimmed


def _trimmed(meta: str, value: bytes | str | None) -> int:
    """`trimmed` as stored (0 when absent); one that is not a count places no chunk, as
    snapshot.lua refuses it: one line naming the field, nothing read."""
    if value is None:
        return 0
    found = as_count(value)
    if found is None:
        raise OperationFailed(
            f"trimmed of {meta} is not a count: {text(value)[:40]!r}",
            hint="set that field of the buffer's hash right (or HDEL it) and run again",
        )
    return found
