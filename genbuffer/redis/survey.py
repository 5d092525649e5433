"""A survey of every buffer under the prefix: what status and metrics report.

Read-only and bounded in memory: SCAN pages (COUNT ``page``, never KEYS), one
pipelined round trip per page. Nothing it sends resets a key's idle time (LLEN,
HMGET, PTTL, OBJECT IDLETIME and MEMORY USAGE do not touch the LRU clock).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from genbuffer import keys
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, redis_errors, text
from genbuffer.redis.meta import BufferMeta

__all__ = ["STATUS_FIELDS", "BufferFacts", "Survey"]

# what status reads of each meta hash
STATUS_FIELDS = (
    fields.FINISHED_AT,
    fields.LAST_CHUNK_AT,
    fields.FIRST_CHUNK_AT,
    fields.QUARANTINED_AT,
    fields.ORPHANED_AT,
    fields.CHUNK_COUNT,
    fields.BYTES,
    fields.ATTEMPTS,
    fields.LAST_ERROR,
)
MEMORY_SAMPLES = 5  # MEMORY USAGE … SAMPLES: list elements sampled to estimate its size


@dataclass(frozen=True)
class BufferFacts:
    """One buffer as the survey saw it (TTLs in seconds: -1 none, None no such key)."""

    key: str
    organization_id: int
    scenario_id: int | None
    generation_id: int
    length: int | None  # None: no list (a meta hash alone)
    meta: BufferMeta
    has_meta: bool
    list_ttl: float | None
    meta_ttl: float | None
    idle_seconds: int | None  # OBJECT IDLETIME of the list (None: unknown)
    memory_bytes: int | None  # MEMORY USAGE of both keys (None: the server will not say)

    @property
    def keys_without_ttl(self) -> int:
        """How many of the two keys exist and will never expire."""
        return (self.list_ttl == -1) + (self.meta_ttl == -1)

    @property
    def ttl(self) -> float | None:
        """Seconds until the chunks expire (None: no list, or no TTL on it)."""
        return None if self.list_ttl is None or self.list_ttl < 0 else self.list_ttl


class Survey:
    """Every buffer under one prefix, with lengths, TTLs, idle times and memory."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.scanned_keys = 0  # keys SCAN returned in the last survey

    def buffers(self, page: int = 1000, pause: float = 0.0) -> Iterator[BufferFacts]:
        """Each buffer once (a list, with or without its meta hash, or a meta hash alone).

        ``pause`` seconds are slept between pages, to spread a large survey's load."""
        pattern = keys.all_buffers_scan_pattern(self.target.prefix)
        self.scanned_keys = 0
        with redis_errors(self.target.url):
            names: list[str] = []
            for raw in self.target.client.scan_iter(match=pattern, count=page):
                names.append(text(raw))
                if len(names) == page:
                    yield from self._describe(names)
                    names = []
                    if pause:
                        time.sleep(pause)
            if names:
                yield from self._describe(names)

    def _describe(self, names: list[str]) -> Iterator[BufferFacts]:
        self.scanned_keys += len(names)
        found: list[tuple[keys.KeyParts, str]] = []
        for name in names:
            parts = keys.parse_chunks_key(name, self.target.prefix)
            if parts is not None:
                found.append((parts, keys.chunks_key_of(name)))
        pipe = self.target.client.pipeline(transaction=False)
        per_buffer = 8
        for _, chunks in found:
            meta = keys.meta_key(chunks)
            pipe.llen(chunks)
            pipe.exists(chunks)
            pipe.hmget(meta, STATUS_FIELDS)
            pipe.pttl(chunks)
            pipe.pttl(meta)
            pipe.object("idletime", chunks)
            pipe.memory_usage(chunks, samples=MEMORY_SAMPLES)
            pipe.memory_usage(meta)
        replies = pipe.execute(raise_on_error=False)
        for index, (parts, chunks) in enumerate(found):
            length, exists, values, list_pttl, meta_pttl, idle, list_mem, meta_mem = replies[
                per_buffer * index : per_buffer * (index + 1)
            ]
            for reply in (length, exists, values, list_pttl, meta_pttl):
                if isinstance(reply, Exception):
                    raise reply
            if parts.is_meta and int(exists):
                continue  # the list is there too: reported once, from the list
            found_meta = {f: text(v) for f, v in zip(STATUS_FIELDS, values, strict=True) if v}
            yield BufferFacts(
                key=chunks,
                organization_id=parts.organization_id,
                scenario_id=parts.scenario_id,
                generation_id=parts.generation_id,
                length=int(length) if int(exists) else None,
                meta=BufferMeta(found_meta),
                has_meta=int(meta_pttl) != -2,
                list_ttl=_seconds(list_pttl),
                meta_ttl=_seconds(meta_pttl),
                idle_seconds=_known(idle),
                memory_bytes=_memory(list_mem, meta_mem),
            )


def _seconds(pttl: object) -> float | None:
    """PTTL as seconds: -1 (no TTL) kept, -2 (no key) as None."""
    value = int(str(pttl))
    if value == -2:
        return None
    return -1 if value == -1 else value / 1000


def _known(reply: object) -> int | None:
    """An integer reply, or None where the server refused (an LFU policy, fakeredis)."""
    if reply is None or isinstance(reply, Exception):
        return None
    return int(str(reply))


def _memory(*replies: object) -> int | None:
    """The sum of MEMORY USAGE replies (None for a missing key), None if refused."""
    if any(isinstance(reply, Exception) for reply in replies):
        return None
    return sum(int(str(reply)) for reply in replies if reply is not None)
