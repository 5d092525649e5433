"""The producer: append chunks to a generation buffer, and mark its stream finished.

One push protocol: push.lua, the one push script (the meta fields and TTL rules live
there and in ``meta``'s docstring), run as the buffer's key layout says
(``genbuffer.redis.layout``: one call where the list and its meta hash share a slot,
the list and then the count on a split list). ``push_chunk`` (once per token),
``push_many`` and ``genbuf push`` all go through ``Layout.push``; with ``seq`` a
retried push is recognised and skipped, without it each call is sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from genbuffer import keys
from genbuffer.lua.push import PushHead
from genbuffer.redis.connection import RedisTarget, redis_errors
from genbuffer.redis.layout import PUSH_BATCH, PUSH_PIPELINE, layout_of
from genbuffer.redis.meta import IsoClock
from genbuffer.redis.scripts import ScriptRunner

if TYPE_CHECKING:
    from genbuffer.redis.events import Events

__all__ = ["PUSH_BATCH", "PUSH_PIPELINE", "Producer", "PushResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """What one push did: the list length after it, chunks appended and skipped."""

    key: str
    length: int
    appended: int
    skipped: int = 0
    bytes: int | None = None  # bytes appended, where the path counted them


@lru_cache(maxsize=4096)
def _cached_keys(
    organization_id: int,
    generation_id: int,
    scenario_id: int | None,
    prefix: str,
    tagged: bool = False,
) -> str:
    """The chunks key, built and validated once per generation."""
    return keys.chunks_key(organization_id, generation_id, scenario_id, prefix, tagged=tagged)


class Producer:
    """Pushes chunks into the buffers of one Redis database, under one key prefix."""

    def __init__(
        self, target: RedisTarget, *, ttl: int, max_len: int | None = None, tagged: bool = False
    ) -> None:
        self.target = target
        self.ttl = ttl
        self.max_len = max_len
        self.tagged = tagged  # GENERATION_KEY_TAGS: the template pushes write
        self.clock = IsoClock()
        self.scripts = ScriptRunner(target)

    @cached_property
    def events(self) -> Events:
        """The compaction-events stream (finish() announces; the worker reads)."""
        from genbuffer.redis.events import Events  # noqa: PLC0415  (not a compaction's)

        return Events(self.target, ttl=self.ttl)

    def key_for(self, organization_id: int, generation_id: int, scenario_id: int | None) -> str:
        """The chunks key a push writes (the configured template), prefix included."""
        return _cached_keys(
            organization_id, generation_id, scenario_id, self.target.prefix, self.tagged
        )

    def read_key_for(
        self, organization_id: int, generation_id: int, scenario_id: int | None
    ) -> str:
        """The chunks key to read: of the two templates, the one whose list or meta hash
        exists (the configured one first; old keys live out their TTL under the other),
        else the configured one."""
        names = [
            self.key_for(organization_id, generation_id, scenario_id),
            _cached_keys(
                organization_id, generation_id, scenario_id, self.target.prefix, not self.tagged
            ),
        ]
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
                pipe.exists(keys.meta_key(name))
            there = pipe.execute()
        if not there[0] and not there[1] and (there[2] or there[3]):
            return names[1]
        return names[0]

    def close(self) -> None:
        """Close the connections of pushes sent once (the next push opens another)."""
        self.scripts.close()

    def push_chunk(
        self,
        organization_id: int,
        generation_id: int,
        chunk: bytes | str,
        scenario_id: int | None = None,
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append one chunk and update the meta hash, in one atomic round trip.

        With ``seq`` (the chunk's 0-based position in the stream) a retried push
        is recognised and skipped instead of duplicating the chunk.
        """
        key = _cached_keys(
            organization_id, generation_id, scenario_id, self.target.prefix, self.tagged
        )
        return self.push_to_key(
            key, (chunk,), (organization_id, scenario_id, generation_id), seq=seq
        )

    def push_many(
        self,
        organization_id: int,
        generation_id: int,
        chunks: Iterable[bytes | str],
        scenario_id: int | None = None,
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append chunks in order, a batch of them per atomic round trip."""
        key = self.key_for(organization_id, generation_id, scenario_id)
        ids = (organization_id, scenario_id, generation_id)
        return self.push_to_key(key, chunks, ids, seq=seq)

    def push_to_key(
        self,
        key: str,
        chunks: Iterable[bytes | str],
        ids: tuple[int, int | None, int],
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append chunks to an already built chunks key; ``ids`` are (org, scenario, generation).

        PUSH_BATCH chunks per push.lua call, as the key's layout sends them.
        """
        org, scenario, generation = ids
        head = PushHead(self.ttl, self.clock.now(), org, scenario, generation)
        pushed = layout_of(self.target, key).push(self.scripts, key, chunks, head, seq)
        if self.max_len is not None and pushed.length > self.max_len:
            log.warning(
                "buffer %s holds %d chunks, over GENERATION_CHUNK_MAX_LEN=%s",
                key,
                pushed.length,
                self.max_len,
            )
        # skipped chunks' bytes were sent but not appended: then the count is unknown
        return PushResult(
            key,
            pushed.length,
            pushed.appended,
            pushed.skipped,
            None if pushed.skipped else pushed.bytes,
        )

    def finish(
        self, organization_id: int, generation_id: int, scenario_id: int | None = None
    ) -> str:
        """Mark the stream finished (`finished_at` in the meta hash) and announce it on the
        compaction-events stream for `genbuf worker`; returns the key.

        The announcement comes after the mark: a worker that reads it sees the stream
        finished. One lost between the two (a crash) is found by the workers' sweeper."""
        key = self.key_for(organization_id, generation_id, scenario_id)
        head = PushHead(self.ttl, self.clock.now(), organization_id, scenario_id, generation_id)
        # push.lua, step finish: where the list or its meta hash exists (a finish()
        # retried after its announcement failed must not bring back, as a stray, a meta
        # hash that a compaction has deleted with its list meanwhile)
        layout_of(self.target, key).finish(self.scripts, key, head)
        self.events.announce(organization_id, generation_id, scenario_id, key=key)
        return key
