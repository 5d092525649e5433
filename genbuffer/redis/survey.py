"""A survey of every buffer under the prefix: what status and metrics report.

Read-only and bounded in memory: SCAN pages (COUNT ``page``, never KEYS), one
pipelined round trip per page. It writes nothing, so nothing it does changes what
a compactor decides: on Redis 7.2+ its connections read with CLIENT NO-TOUCH (no
key's LRU clock moves); on 7.0 LLEN and HMGET do reset the clock, which is why the
idle rule (``genbuffer.engine.idleness``) trusts OBJECT IDLETIME only under NO-TOUCH.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from genbuffer import keys
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, redis_errors, scan_pages, text, wrong_type
from genbuffer.redis.layout import layout_of
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
    fields.TRIMMED,
    fields.SEEN_END,
    fields.SEEN_AT,
    fields.SEEN_FIRST,
)
MEMORY_SAMPLES = 5  # MEMORY USAGE … SAMPLES: list elements sampled to estimate its size
PER_BUFFER = 6  # commands pipelined per buffer, and an HMGET per hash of its fields


@dataclass(slots=True)  # one per buffer of a million-key survey: no frozen setattr
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
    # OBJECT IDLETIME of the list, where genbuf's reads leave it untouched (NO-TOUCH);
    # None elsewhere (Redis 7.0, an LFU policy, the in-process Redis)
    idle_seconds: int | None
    memory_bytes: int | None  # MEMORY USAGE of both keys (None: the server will not say)

    @property
    def keys_without_ttl(self) -> int:
        """How many of the two keys exist and will never expire."""
        return (self.list_ttl == -1) + (self.meta_ttl == -1)

    @property
    def end(self) -> int:
        """Chunks this life of the buffer has held: trimmed ones and the list's."""
        return self.meta.trimmed + (self.length or 0)

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
            for number, names in enumerate(scan_pages(self.target.client, pattern, page)):
                if pause and number:
                    time.sleep(pause)
                yield from self._describe(names)

    def _describe(self, names: list[str]) -> Iterator[BufferFacts]:
        self.scanned_keys += len(names)
        found = keys.buffers_in_page(self._without_listed_metas(names), self.target.prefix)
        pipe = self.target.client.pipeline(transaction=False)
        hashes = [layout_of(self.target, chunks).hashes(chunks) for _, chunks in found]
        for (_, chunks), where in zip(found, hashes, strict=True):
            meta = keys.meta_key(chunks)
            pipe.object("idletime", chunks)  # first: before anything else reads the list
            pipe.llen(chunks)  # 0: no list (Redis deletes a list once it is empty)
            pipe.pttl(chunks)
            pipe.pttl(meta)
            pipe.memory_usage(chunks, samples=MEMORY_SAMPLES)
            pipe.memory_usage(meta)
            for name in where:  # the meta hash; beside a split list genbuf's own after it
                pipe.hmget(name, STATUS_FIELDS)
        replies = pipe.execute(raise_on_error=False)
        trusted = self.target.no_touch.active
        base = 0
        for (parts, chunks), where in zip(found, hashes, strict=True):
            idle, length, list_pttl, meta_pttl, list_memory, meta_memory = replies[
                base : base + PER_BUFFER
            ]
            read = replies[base + PER_BUFFER : base + PER_BUFFER + len(where)]
            base += PER_BUFFER + len(where)
            if any(wrong_type(reply) for reply in (length, list_pttl, meta_pttl, *read)):
                continue  # a key of another type under the prefix: no buffer
            for reply in (length, list_pttl, meta_pttl, *read):
                if isinstance(reply, Exception):
                    raise reply
            stored: dict[str, str] = {}
            for values in read:  # genbuf's own hash last: its fields win
                stored.update({f: text(v) for f, v in zip(STATUS_FIELDS, values, strict=True) if v})
            yield BufferFacts(
                chunks,
                parts.organization_id,
                parts.scenario_id,
                parts.generation_id,
                length or None,
                BufferMeta(stored),
                meta_pttl != -2,
                _seconds(list_pttl),
                _seconds(meta_pttl),
                _known(idle) if trusted else None,
                _memory(list_memory, meta_memory),
            )

    def _without_listed_metas(self, names: list[str]) -> list[str]:
        """Drop the meta hashes whose list exists (SCAN returns that list too, mostly in
        another page): one EXISTS each, in one round trip, rather than a description."""
        suffix = keys.META_SUFFIX
        metas = [name for name in names if name.endswith(suffix)]
        if not metas:
            return names
        pipe = self.target.client.pipeline(transaction=False)
        for name in metas:
            pipe.exists(keys.chunks_key_of(name))
        listed = {name for name, there in zip(metas, pipe.execute(), strict=True) if there}
        return [name for name in names if name not in listed]


def _seconds(pttl: int) -> float | None:
    """PTTL as seconds: -1 (no TTL) kept, -2 (no key) as None."""
    if pttl == -2:
        return None
    return -1 if pttl == -1 else pttl / 1000


def _known(reply: object) -> int | None:
    """An integer reply, or None where the server refused (an LFU policy, fakeredis)."""
    return reply if isinstance(reply, int) else None


def _memory(of_list: object, of_meta: object) -> int | None:
    """The sum of two MEMORY USAGE replies (None for a missing key), None if refused."""
    if isinstance(of_list, Exception) or isinstance(of_meta, Exception):
        return None
    return (of_list if isinstance(of_list, int) else 0) + (
        of_meta if isinstance(of_meta, int) else 0
    )
