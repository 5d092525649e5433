"""The producer: append chunks to a generation buffer, and mark its stream finished.

One push protocol: push.lua, the one push script (the meta fields and TTL rules live
there and in ``meta``'s docstring), run as the buffer's key layout says
(``genbuffer.redis.layout``: one call where the list and its meta hash share a slot,
the list and then the count on a split list). ``push_chunk`` (once per token),
``push_many`` and ``genbuf push`` all go through ``Layout.push``; with ``seq`` a
retried push is recognised and skipped, without it each call is sent once.

A chunk is ``bytes`` or ``str`` (sent as UTF-8); a ``bytearray`` or ``memoryview`` is
taken as its bytes. Anything else is a TypeError naming its type, raised before any
chunk of the call is sent (``push_many`` reads an iterator whole first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
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

__all__ = ["PUSH_BATCH", "PUSH_PIPELINE", "Chunk", "Producer", "PushResult"]

log = logging.getLogger(__name__)

Chunk = bytes | bytearray | memoryview | str  # what a push takes as one chunk
_SENT_AS_THEY_ARE = frozenset({bytes, str})


def _chunk(value: object) -> bytes | str:
    """One chunk as it is sent: bytes and str as they are, a bytearray or memoryview
    as its bytes; anything else is a TypeError naming its type."""
    if isinstance(value, bytes | str):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"a chunk is bytes or str (or a bytearray or memoryview, taken as its bytes), "
        f"not {type(value).__name__}: nothing of this push was sent"
    )


def _chunks(chunks: Iterable[Chunk]) -> Sequence[bytes | str]:
    """Every chunk of a push checked (``_chunk``) before any is sent: an iterator is read
    whole first. A str, bytes or the like given as the chunks is a TypeError (its
    characters or bytes would each be a chunk)."""
    if isinstance(chunks, str | bytes | bytearray | memoryview):
        raise TypeError(
            f"push_many takes an iterable of chunks, not one {type(chunks).__name__}: "
            "push_chunk pushes one chunk"
        )
    held = chunks if type(chunks) is list or type(chunks) is tuple else list(chunks)
    if set(map(type, held)) <= _SENT_AS_THEY_ARE:  # the usual case: one pass in C
        return held  # type: ignore[return-value]
    checked = [_chunk(value) for value in held]
    return tuple(checked) if type(held) is tuple else checked


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
        chunk: Chunk,
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
        if type(chunk) is not bytes and type(chunk) is not str:  # (once per token: cheap)
            chunk = _chunk(chunk)
        return self._push(key, (chunk,), (organization_id, scenario_id, generation_id), seq)

    def push_many(
        self,
        organization_id: int,
        generation_id: int,
        chunks: Iterable[Chunk],
        scenario_id: int | None = None,
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append chunks in order, a batch of them per atomic round trip (every chunk
        is checked before the first is sent)."""
        key = self.key_for(organization_id, generation_id, scenario_id)
        ids = (organization_id, scenario_id, generation_id)
        return self.push_to_key(key, chunks, ids, seq=seq)

    def push_to_key(
        self,
        key: str,
        chunks: Iterable[Chunk],
        ids: tuple[int, int | None, int],
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append chunks to an already built chunks key; ``ids`` are (org, scenario, generation).

        PUSH_BATCH chunks per push.lua call, as the key's layout sends them; every
        chunk is checked before the first is sent.
        """
        return self._push(key, _chunks(chunks), ids, seq)

    def _push(
        self,
        key: str,
        chunks: Sequence[bytes | str],
        ids: tuple[int, int | None, int],
        seq: int | None,
    ) -> PushResult:
        """``push_to_key`` of chunks already checked."""
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
        announcement = self.events.announcement(
            organization_id, generation_id, scenario_id, key=key
        )
        layout_of(self.target, key).finish(self.scripts, key, head, then=announcement)
        return key
