"""Finding buffers: SCAN under the prefix (and elsewhere), and when each last changed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from genbuffer import keys
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, redis_errors, run_script, scan_pages, text
from genbuffer.redis.meta import BufferMeta, IsoClock, parse_time

__all__ = ["FoundBuffer", "Scanner"]


@dataclass(frozen=True)
class FoundBuffer:
    """A buffer found by a scan: its chunks key, ids, and what batch work decides on."""

    key: str
    organization_id: int
    scenario_id: int | None
    generation_id: int
    has_list: bool
    meta: dict[str, str]
    list_idle_seconds: int | None

    @property
    def state(self) -> str:
        """`quarantined`, `orphaned`, `finished`, or `open` (streaming or idle: ``idle_for``)."""
        return BufferMeta(self.meta).state

    def idle_for(self, now: datetime) -> timedelta | None:
        """How long no chunk arrived: `last_chunk_at` when the producer keeps it, else the
        list's idle time (OBJECT IDLETIME); None when neither is known."""
        stamp = BufferMeta(self.meta).last_chunk_at
        if stamp is not None:
            return now - stamp
        if self.list_idle_seconds is not None:
            return timedelta(seconds=self.list_idle_seconds)
        return None


class Scanner:
    """Discovery of buffers under one prefix, read-only but for observe()."""

    def __init__(self, target: RedisTarget, *, ttl: int, clock: IsoClock | None = None) -> None:
        self.target = target
        self.ttl = ttl
        self.clock = clock or IsoClock()
        self._observe = target.register("observe")

    def discover(self, page: int = 1000) -> Iterator[FoundBuffer]:
        """Every generation buffer under the prefix, each once: lists with or without a
        meta hash, and meta hashes whose list is gone.

        Read-only and bounded in memory: a SCAN page at a time, one pipelined round
        trip per page (EXISTS and OBJECT IDLETIME do not reset a key's idle time).
        """
        pattern = keys.all_buffers_scan_pattern(self.target.prefix)
        with redis_errors(self.target.url):
            for names in scan_pages(self.target.client, pattern, page):
                yield from self._describe_page(names)

    def _describe_page(self, names: list[str]) -> Iterator[FoundBuffer]:
        found = keys.buffers_in_page(names, self.target.prefix)
        pipe = self.target.client.pipeline(transaction=False)
        for _, chunks in found:
            pipe.exists(chunks)
            pipe.hmget(keys.meta_key(chunks), fields.DISCOVERY_FIELDS)
            pipe.object("idletime", chunks)
            if self.target.split(chunks):  # genbuf's fields are beside the list
                pipe.hmget(self.target.state_of(chunks), fields.DISCOVERY_FIELDS)
        replies = iter(pipe.execute(raise_on_error=False))
        for parts, chunks in found:
            has_list, values, idle = next(replies), next(replies), next(replies)
            own = next(replies) if self.target.split(chunks) else []
            for reply in (has_list, values, own):
                if isinstance(reply, Exception):
                    raise reply
            if parts.is_meta and int(has_list):
                continue  # the list is there too: reported once, from the list
            meta = {f: text(v) for f, v in zip(fields.DISCOVERY_FIELDS, values, strict=True) if v}
            # genbuf's own fields, beside a split list: they win over the meta hash's
            meta.update({f: text(v) for f, v in zip(fields.DISCOVERY_FIELDS, own) if v})  # noqa: B905
            yield FoundBuffer(
                key=chunks,
                organization_id=parts.organization_id,
                scenario_id=parts.scenario_id,
                generation_id=parts.generation_id,
                has_list=bool(int(has_list)),
                meta=meta,
                # None: unknown (the in-process Redis, or an LFU eviction policy)
                list_idle_seconds=None
                if isinstance(idle, Exception) or idle is None
                else int(idle),
            )

    def has_buffers(self, page: int = 1000) -> bool:
        """Whether any buffer key lives under the configured prefix (stops at the first)."""
        pattern = keys.all_buffers_scan_pattern(self.target.prefix)
        with redis_errors(self.target.url):
            for raw in self.target.client.scan_iter(match=pattern, count=page):
                if keys.parse_chunks_key(text(raw), self.target.prefix) is not None:
                    return True
        return False

    def other_prefixes(self, page: int = 1000, sample: int = 10_000) -> dict[str, int]:
        """Buffer keys under prefixes other than the configured one, counted by prefix.

        A SCAN of the whole keyspace (no KEYS), stopped after ``sample`` matching keys.
        """
        counts: dict[str, int] = {}
        seen = 0
        with redis_errors(self.target.url):
            for raw in self.target.client.scan_iter(
                match=keys.any_prefix_scan_pattern(), count=page
            ):
                found = keys.prefix_of(text(raw))
                if found is not None and found != self.target.prefix:
                    counts[found] = counts.get(found, 0) + 1
                seen += 1
                if seen >= sample:
                    break
        return counts

    def observe(self, key: str) -> datetime | None:
        """When the list last changed as genbuf saw it (observe.lua); None if it is gone."""
        with redis_errors(self.target.url):
            seen = run_script(
                self._observe,
                [key, self.target.state_of(key)],
                [self.clock.now(), self.ttl],
                self.target.url,
            )
        return parse_time(text(seen)) if seen else None
