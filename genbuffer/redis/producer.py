"""The producer: append chunks to a generation buffer and keep its meta hash.

Three paths write a buffer, one protocol (fields and TTL rules: ``meta``):
``push_one.lua`` for a single unsequenced chunk (once per token, on the held
connection), ``push.lua`` for sequenced pushes (idempotent: a retried chunk is
skipped), and MULTI/EXEC transactions (``transactions``) for unsequenced batches
on Redis 7+, where native RPUSH beats converting every chunk to a Lua string.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import redis

from genbuffer import keys
from genbuffer.lua.push import PushArgs, PushReply
from genbuffer.lua.push_one import PushOneArgs
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, SentUnconfirmed, redis_errors
from genbuffer.redis.events import Events
from genbuffer.redis.held import HeldConnection, HeldConnectionLost
from genbuffer.redis.meta import IsoClock
from genbuffer.redis.scripts import ScriptRunner
from genbuffer.redis.split import SplitMeta
from genbuffer.redis.transactions import (
    chunk_bytes,
    outcome_unknown,
    push_transactions,
    total_bytes,
)

__all__ = ["PUSH_BATCH", "PUSH_PIPELINE", "Producer", "PushResult"]

log = logging.getLogger(__name__)

PUSH_BATCH = 1000  # chunks per Lua call: far below Lua's unpack() limit of ~8000 values
PUSH_PIPELINE = 16  # batch scripts sent per round trip by push_many


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
) -> tuple[str, str]:
    """(chunks key, meta key), built and validated once per generation."""
    chunks = keys.chunks_key(organization_id, generation_id, scenario_id, prefix, tagged=tagged)
    return chunks, keys.meta_key(chunks)


def _batches(chunks: Iterable[bytes | str], size: int) -> Iterator[list[bytes | str]]:
    """Lists of up to ``size`` chunks, in order."""
    batch: list[bytes | str] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _sum_replies(replies: list[PushReply], appended: int, skipped: int) -> tuple[int, int, int]:
    """(last list length, appended, skipped) after a pipeline of push.lua replies."""
    length = 0
    for reply in replies:
        length = reply.length
        appended += reply.appended
        skipped += reply.skipped
    return length, appended, skipped


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
        # one connection to one server: on a cluster each key has its node, so the
        # client's routing is used instead
        self._held = None if target.cluster else HeldConnection(target.client)
        self._expire_nx: bool | None = None
        self.events = Events(target, ttl=ttl)
        self.split_meta = SplitMeta(target, ttl=ttl)

    def key_for(self, organization_id: int, generation_id: int, scenario_id: int | None) -> str:
        """The chunks key a push writes (the configured template), prefix included."""
        return _cached_keys(
            organization_id, generation_id, scenario_id, self.target.prefix, self.tagged
        )[0]

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
            )[0],
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
        """Close the held connection (the next push opens another)."""
        if self._held is not None:
            self._held.close()

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
        key, meta = _cached_keys(
            organization_id, generation_id, scenario_id, self.target.prefix, self.tagged
        )
        if seq is not None or self._held is None:
            return self.push_to_key(
                key, [chunk], (organization_id, scenario_id, generation_id), seq=seq
            )
        # The hot path of a streaming producer: cached keys, one EVALSHA of push_one.lua
        # on a held connection (see genbuffer.redis.held).
        call = PushOneArgs(
            chunks_key=key,
            meta_key=meta,
            chunk=chunk,
            now=self.clock.now(),
            chunk_bytes=chunk_bytes(chunk),
            ttl=self.ttl,
            organization_id=organization_id,
            scenario_id=scenario_id,
            generation_id=generation_id,
        )
        try:
            length = call.parse(self._held.call(*self.scripts.command(call)))
        except (redis.exceptions.NoScriptError, HeldConnectionLost) as exc:
            if isinstance(exc, HeldConnectionLost) and exc.sent:
                raise outcome_unknown(self.target.url, key, confirmed=0, in_doubt=1) from None
            # The script was not loaded (NOSCRIPT: it did not run), or the connection
            # failed before the push was sent: the runner loads the script, and
            # redis-py's path retries with backoff.
            with redis_errors(self.target.url):
                length = self.scripts.run(call)
        if self.max_len is not None and length > self.max_len:
            self._warn_length(key, length)
        return PushResult(key=key, length=length, appended=1, skipped=0)

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

        Unsequenced, on Redis 7+: MULTI/EXEC transactions. Otherwise each batch of
        PUSH_BATCH chunks is one push.lua call; PUSH_PIPELINE batches travel per
        round trip, in order.
        """
        org, scenario, generation = ids
        head = (self.ttl, self.clock.now(), org, "" if scenario is None else scenario, generation)
        url = self.target.url
        if self.target.split(key):  # list then count, each in its slot (redis.split)
            length, appended, pushed = self.split_meta.push(
                key, chunks, head, batch_size=PUSH_BATCH, seq=seq
            )
            if appended == 0:
                length = self.target.client.llen(key)
            if self.max_len is not None and length > self.max_len:
                self._warn_length(key, length)
            return PushResult(key, length, appended, 0, pushed)
        with redis_errors(url):
            if seq is None and self._held is not None and self._has_expire_nx():
                length, appended, pushed = push_transactions(
                    self._held, key, chunks, head, url=url, batch_size=PUSH_BATCH
                )
                if appended == 0:
                    length = int(self.target.client.llen(key))
                if self.max_len is not None and length > self.max_len:
                    self._warn_length(key, length)
                return PushResult(key, length, appended, 0, pushed)
            length, appended, skipped, pushed = self._push_scripted(key, chunks, ids, seq)
        if self.max_len is not None and length > self.max_len:
            self._warn_length(key, length)
        # skipped chunks' bytes were sent but not appended: then the count is unknown
        return PushResult(key, length, appended, skipped, None if skipped else pushed)

    def _push_scripted(
        self,
        key: str,
        chunks: Iterable[bytes | str],
        ids: tuple[int, int | None, int],
        seq: int | None,
    ) -> tuple[int, int, int, int]:
        """push.lua over batches: (list length, appended, skipped, bytes sent);
        ``ids`` are (org, scenario, generation)."""
        org, scenario, generation = ids
        meta = keys.meta_key(key)
        now = self.clock.now()
        length = appended = skipped = pushed_bytes = 0
        group: list[PushArgs] = []
        for batch in _batches(chunks, PUSH_BATCH):
            total = total_bytes(batch)
            pushed_bytes += total
            group.append(
                PushArgs(
                    chunks_key=key,
                    meta_key=meta,
                    ttl=self.ttl,
                    now=now,
                    organization_id=org,
                    scenario_id=scenario,
                    generation_id=generation,
                    seq=seq,
                    total_bytes=total,
                    chunks=tuple(batch),
                )
            )
            seq = None if seq is None else seq + len(batch)
            if len(group) == PUSH_PIPELINE:
                replies = self._run_scripts(group, appended)
                length, appended, skipped = _sum_replies(replies, appended, skipped)
                group = []
        if group:
            replies = self._run_scripts(group, appended)
            length, appended, skipped = _sum_replies(replies, appended, skipped)
        elif appended + skipped == 0:
            length = int(self.target.client.llen(key))
        return length, appended, skipped, pushed_bytes

    def _run_scripts(self, group: list[PushArgs], before: int = 0) -> list[PushReply]:
        """push.lua calls for ``group``, in order, one round trip (``before``: chunks
        this push appended already, for an error to count).

        A call refused with NOSCRIPT did not run: the runner sends the refused calls
        again, in order (they are the last ones of the group, or nothing more is sent).
        """
        if self.target.cluster:  # redis-py refuses scripts in a cluster pipeline
            url = self.target.url
            answered: list[PushReply] = []
            for call in group:
                # a sequenced call is safe to send again (push.lua skips what arrived)
                try:
                    answered.append(
                        self.scripts.run(call)
                        if call.seq is not None
                        else self.scripts.run_once(call)
                    )
                except SentUnconfirmed:
                    confirmed = before + sum(reply.appended for reply in answered)
                    doubt = len(call.chunks)
                    key = call.chunks_key
                    raise outcome_unknown(url, key, confirmed=confirmed, in_doubt=doubt) from None
            return answered
        return self.scripts.run_pipelined(group, in_order=True)

    def _has_expire_nx(self) -> bool:
        """Whether the server takes EXPIRE … NX (Redis 7+); asked once per producer."""
        if self._expire_nx is None:
            probe = keys.meta_key(keys.smoke_chunks_key(uuid.uuid4().hex, self.target.prefix))
            try:  # on a key that does not exist: 0 on Redis 7+, an error before
                self.target.client.expire(probe, 1, nx=True)
                self._expire_nx = True
            except redis.exceptions.ResponseError:
                self._expire_nx = False
        return self._expire_nx

    def _warn_length(self, key: str, length: int) -> None:
        log.warning(
            "buffer %s holds %d chunks, over GENERATION_CHUNK_MAX_LEN=%s", key, length, self.max_len
        )

    def finish(
        self, organization_id: int, generation_id: int, scenario_id: int | None = None
    ) -> str:
        """Mark the stream finished (`finished_at` in the meta hash) and announce it on the
        compaction-events stream for `genbuf worker`; returns the key.

        The announcement comes after the mark: a worker that reads it sees the stream
        finished. One lost between the two (a crash) is found by the workers' sweeper."""
        key = self.key_for(organization_id, generation_id, scenario_id)
        meta = keys.meta_key(key)
        client = self.target.client
        with redis_errors(self.target.url):
            # a finish() retried after its announcement failed must not bring back, as a
            # stray, a meta hash that a compaction has deleted with its list meanwhile
            if client.exists(key, meta):
                client.hset(meta, fields.FINISHED_AT, self.clock.now())
                if client.ttl(meta) == -1:
                    client.expire(meta, self.ttl)
        self.events.announce(organization_id, generation_id, scenario_id, key=key)
        return key
