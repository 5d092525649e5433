"""Finding buffers: SCAN under the prefix (and elsewhere), and when each last changed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from genbuffer import keys
from genbuffer.lua.observe import ObserveArgs, ObserveReply
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, redis_errors, scan_pages, text, wrong_type
from genbuffer.redis.direct import Keyed, pipeline_on_nodes
from genbuffer.redis.layout import layout_of
from genbuffer.redis.meta import BufferMeta, Observation, as_int, parse_time
from genbuffer.redis.scripts import ScriptRunner
from genbuffer.states import BufferState

__all__ = ["FoundBuffer", "Scanner"]

_IDLETIME = {"infotype": "idletime"}  # redis-py parses OBJECT's reply by it


@dataclass(frozen=True)
class FoundBuffer:
    """A buffer found by a scan: its chunks key, ids, and what batch work decides on."""

    key: str
    organization_id: int
    scenario_id: int | None
    generation_id: int
    has_list: bool
    meta: dict[str, str]
    # OBJECT IDLETIME of the list, only where genbuf's reads leave it untouched (CLIENT
    # NO-TOUCH): None on Redis 7.0, under an LFU policy and in the in-process Redis
    list_idle_seconds: int | None
    length: int = 0
    ttl_seconds: float | None = None  # until the list expires (None: no list, or no TTL)

    @property
    def state(self) -> BufferState:
        """`quarantined`, `orphaned`, `finished`, or `open` (streaming or idle: see
        ``genbuffer.engine.idleness``)."""
        return BufferMeta(self.meta).state

    def with_row(self) -> FoundBuffer:
        """This buffer as one whose row exists: not orphaned (the mark stays in Redis
        until a compaction succeeds and clears it)."""
        meta = {name: value for name, value in self.meta.items() if name != fields.ORPHANED_AT}
        return replace(self, meta=meta)

    @property
    def end(self) -> int:
        """Chunks this life of the buffer has held: trimmed ones and the list's."""
        return as_int(self.meta.get(fields.TRIMMED)) + self.length


class Scanner:
    """Discovery of buffers under one prefix, read-only but for observe()."""

    def __init__(self, target: RedisTarget, *, ttl: int) -> None:
        self.target = target
        self.ttl = ttl
        self.scripts = ScriptRunner(target)

    def discover(self, page: int = 1000) -> Iterator[FoundBuffer]:
        """Every generation buffer under the prefix, each once: lists with or without a
        meta hash, and meta hashes whose list is gone.

        Read-only and bounded in memory: a SCAN page at a time, one pipelined round
        trip per page. OBJECT IDLETIME is asked first, before anything else reads the
        list; it counts only where every read is NO-TOUCH (``RedisTarget.no_touch``).
        """
        pattern = keys.all_buffers_scan_pattern(self.target.prefix)
        with redis_errors(self.target.url):
            for names in scan_pages(self.target.client, pattern, page):
                yield from self._describe_page(names)

    def _describe_page(self, names: list[str]) -> Iterator[FoundBuffer]:
        found = keys.buffers_in_page(names, self.target.prefix)
        hashes = [layout_of(self.target, chunks).hashes(chunks) for _, chunks in found]
        commands: list[Keyed] = []
        for (_, chunks), where in zip(found, hashes, strict=True):
            commands += [
                (chunks, ("OBJECT", "IDLETIME", chunks), _IDLETIME),
                (chunks, ("LLEN", chunks)),  # 0: no list (Redis deletes an empty list)
                (chunks, ("PTTL", chunks)),
            ]
            commands += [(name, ("HMGET", name, *fields.DISCOVERY_FIELDS)) for name in where]
        replies = iter(pipeline_on_nodes(self.target, commands))
        trusted = self.target.no_touch.active
        for (parts, chunks), where in zip(found, hashes, strict=True):
            idle, length, pttl = next(replies), next(replies), next(replies)
            read = [next(replies) for _ in where]
            if any(wrong_type(reply) for reply in (length, pttl, *read)):
                continue  # a key of another type under the prefix: no buffer
            for reply in (length, pttl, *read):
                if isinstance(reply, Exception):
                    raise reply
            if parts.is_meta and int(length):
                continue  # the list is there too: reported once, from the list
            meta: dict[str, str] = {}
            for values in read:  # genbuf's own hash last: its fields win
                meta.update(
                    {f: text(v) for f, v in zip(fields.DISCOVERY_FIELDS, values, strict=True) if v}
                )
            yield FoundBuffer(
                key=chunks,
                organization_id=parts.organization_id,
                scenario_id=parts.scenario_id,
                generation_id=parts.generation_id,
                has_list=bool(int(length)),
                meta=meta,
                list_idle_seconds=int(idle) if trusted and isinstance(idle, int) else None,
                length=int(length),
                ttl_seconds=pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None,
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

    def observe(self, names: list[str], now: datetime) -> dict[str, Observation | None]:
        """Record this look, made ``now``, at each buffer of ``names`` for the idle rule
        (observe.lua, pipelined: one round trip for all of them, on a cluster one to
        each node; a look recorded twice is the same look); what each records,
        None where the list is gone. Compactors only: a read-only command must not
        change what they decide."""
        at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        calls = [
            ObserveArgs(name, layout_of(self.target, name).state_key(name), at, self.ttl)
            for name in names
        ]
        with redis_errors(self.target.url):  # (on a cluster: one trip to each node)
            replies = self.scripts.run_pipelined(calls)
        return {name: _observation(reply) for name, reply in zip(names, replies, strict=True)}


def _observation(reply: ObserveReply | None) -> Observation | None:
    """observe.lua's reply as an Observation, or nothing (no list, or no time in it)."""
    if reply is None:
        return None
    at = parse_time(reply.seen_at)
    if at is None:
        return None
    return Observation(reply.seen_end, at, first=reply.first)
