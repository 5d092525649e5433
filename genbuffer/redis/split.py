"""An untagged list on a Redis Cluster: the app's meta hash lives in another slot.

A Lua script may touch the keys of one slot only, and the app keeps writing
``K`` and ``K:meta`` as named (no hash tag). So the fields genbuf owns (stream
id, ``trimmed``, failures) live in ``{K}:genbuf`` beside the list (same slot,
one script for both), and the producer's fields stay in ``K:meta``, read on
their own. Why that keeps invariant 1 (no chunk lost, none twice):

- Every producer appends to the list before it counts in the meta hash (the app's
  ``RPUSH`` then ``HINCRBY``; ``push`` here: ``push_list.lua``, then
  ``push_meta.lua``). Compaction reads the meta hash *before* the script that
  snapshots the list, so the counter it sees never exceeds what the list holds plus
  what was trimmed: a chunk is never taken for vanished because its count arrived
  first, and chunks that did vanish (expired, lost in a failover) still show as a
  counter ahead of the list (``chunk_count_mismatch``, never silent).
- Positions, the stream id and acknowledgements live beside the list and change in
  one script with it, exactly as in the one-slot layout: what is trimmed is what a
  committed transaction holds.
- A deleted buffer (``--delete``) loses its list in one script with the positions,
  and ``{K}:genbuf`` is kept, marked ``ended``; the meta hash then gives up the
  deleted life's count (``release_meta.lua``, once per life: a producer that began
  the next life meanwhile keeps what it counted), and only then is ``{K}:genbuf``
  dropped (``drop_state.lua``). A snapshot that meets ``ended`` (a deleter killed
  between the steps) finishes the delete first. A counter read before a snapshot
  that finds neither list nor ``{K}:genbuf`` may belong to a life deleted in
  between: the meta hash is read again (the release comes before the drop, so it
  shows by then) and the chunks count as vanished only if the counter still says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any

from genbuffer import keys
from genbuffer.errors import UsageError
from genbuffer.lua.drop_state import DropStateArgs
from genbuffer.lua.push_list import PushListArgs
from genbuffer.lua.push_meta import ListCreated, PushMetaArgs
from genbuffer.lua.release_meta import ReleaseMetaArgs
from genbuffer.redis.connection import RedisTarget, SentUnconfirmed, redis_errors, text
from genbuffer.redis.scripts import ScriptRunner
from genbuffer.redis.transactions import outcome_unknown, total_bytes

__all__ = ["SplitMeta"]


class SplitMeta:
    """The app's meta hash of an untagged list on a cluster: read, counted, released."""

    def __init__(self, target: RedisTarget, *, ttl: int) -> None:
        self.target = target
        self.ttl = ttl
        self.scripts = ScriptRunner(target)

    def read(self, chunks: str, lease: int) -> tuple[dict[str, str], bool]:
        """The meta hash (every field) and whether it exists; one that would expire within
        ``lease`` seconds is extended to it (it must outlive the compaction reading it)."""
        meta = keys.meta_key(chunks)
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            pipe.hgetall(meta)
            pipe.ttl(meta)
            values, ttl = pipe.execute()
            if 0 <= int(ttl) < lease:
                self.target.client.expire(meta, lease)
        return {text(k): text(v) for k, v in values.items()}, int(ttl) != -2

    def finish_delete(self, chunks: str, life: int, stream: str) -> None:
        """After ack.lua deleted a life's list (genbuf's hash kept, marked `ended`): take
        its ``life`` chunks off the meta hash's count, then drop genbuf's hash. Safe to
        repeat, and to run from another process (one killed between the steps leaves
        `ended`, which the next snapshot finishes)."""
        with redis_errors(self.target.url):
            self.scripts.run(ReleaseMetaArgs(keys.meta_key(chunks), life=life, stream_id=stream))
            self.scripts.run(DropStateArgs(keys.state_key(chunks), stream_id=stream))

    def counter(self, chunks: str) -> str:
        """The meta hash's chunk_count now ('-' when it has none)."""
        with redis_errors(self.target.url):
            value = self.target.client.hget(keys.meta_key(chunks), "chunk_count")
        return "-" if value is None else text(value)

    def push(
        self,
        key: str,
        chunks: Iterable[bytes | str],
        head: tuple[Any, ...],
        *,
        batch_size: int,
        seq: int | None = None,
    ) -> tuple[int, int, int]:
        """Append ``chunks`` (list first, then the count: the order the module relies on).

        ``head`` is (ttl, now, org, scenario or '', generation). Returns (list length,
        chunks appended, bytes)."""
        if seq is not None:
            raise UsageError(
                f"sequenced pushes to {key} need list and meta hash in one slot on a "
                "Redis Cluster: the hash-tagged key template, GENERATION_KEY_TAGS=true",
                hint="set GENERATION_KEY_TAGS=true, or push without sequence numbers",
            )
        ttl, now, org, scenario, generation = head
        state, meta = keys.state_key(key), keys.meta_key(key)
        length = appended = pushed = 0
        batch: list[bytes | str] = []
        url = self.target.url
        with redis_errors(url):
            for chunk in chain(chunks, [None]):
                if chunk is not None:
                    batch.append(chunk)
                    if len(batch) < batch_size:
                        continue
                if not batch:
                    break
                size = total_bytes(batch)
                try:
                    length = self.scripts.run_once(PushListArgs(key, state, ttl, tuple(batch)))
                except SentUnconfirmed:
                    doubt = len(batch)
                    raise outcome_unknown(url, key, confirmed=appended, in_doubt=doubt) from None
                created = ListCreated.CREATED if length == len(batch) else ListCreated.EXISTED
                count = PushMetaArgs(
                    meta_key=meta,
                    ttl=ttl,
                    now=now,
                    organization_id=org,
                    scenario_id=None if scenario == "" else scenario,
                    generation_id=generation,
                    appended=len(batch),
                    total_bytes=size,
                    list_created=created,
                )
                try:
                    self.scripts.run_once(count)
                except SentUnconfirmed:  # the chunks are in; their count may not be
                    confirmed = appended + len(batch)
                    raise outcome_unknown(url, key, confirmed=confirmed, in_doubt=0) from None
                appended += len(batch)
                pushed += size
                batch = []
        return length, appended, pushed
