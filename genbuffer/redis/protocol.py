"""The compaction protocol on the Redis side: snapshot, paged read, acknowledge, set aside.

Compaction reads a buffer by *absolute* chunk position: the meta hash keeps
``trimmed`` (chunks already acknowledged and removed from the head of the list)
and ``stream_id`` (one life of the buffer). A chunk at list index ``i`` has
position ``trimmed + i``, so a compactor can acknowledge exactly what it
committed while producers keep appending and other compactors keep reading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from genbuffer.errors import StreamChanged
from genbuffer.lua.ack import AckArgs, AckReply, WhenEmpty
from genbuffer.lua.snapshot import Mode, SnapshotArgs, SnapshotTag
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget, redis_errors, text
from genbuffer.redis.layout import DeletedLife, Layout, MetaRead, layout_of
from genbuffer.redis.meta import BufferMeta, IsoClock
from genbuffer.redis.scripts import ScriptRunner

if TYPE_CHECKING:
    from genbuffer.lua.fail import SetAside

__all__ = ["LEASE_SECONDS", "PAGE_BYTES", "READ_PAGE", "BufferSnapshot", "CompactionProtocol"]

READ_PAGE = 2000  # chunks per LRANGE page while compacting …
PAGE_BYTES = 8 * 1024 * 1024  # … or fewer, so that a page weighs about this much
LEASE_SECONDS = 600  # a buffer being compacted lives at least this long


@dataclass(frozen=True)
class BufferSnapshot:
    """A consistent view of a buffer taken at the start of a compaction."""

    key: str
    exists: bool
    length: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    first_page: list[bytes] = field(default_factory=list)  # chunks from first_page_at on
    first_page_at: int = 0  # absolute position of first_page[0]
    # A read-only snapshot (dry run) does not record chunks vanished from the head in
    # the meta hash; they are counted here and added to positions instead.
    vanished: int = 0
    # The chunks the buffer holds where the row's last persisted ones should be
    # (snapshot.lua, ARGV[8]): one window for the row's stream, or one per supposed
    # `trimmed` of a lost meta hash; shorter than asked where the list lacks them.
    windows: list[list[bytes]] = field(default_factory=list)

    @cached_property
    def fields(self) -> BufferMeta:
        """The meta hash, typed (built once: a compaction reads it some twenty times)."""
        return BufferMeta(self.meta)

    @property
    def stream_id(self) -> str | None:
        """The id of this life of the buffer (None for a meta hash without one)."""
        return self.fields.stream_id

    @property
    def trimmed(self) -> int:
        """Chunks of this stream already acknowledged and removed from the list."""
        return self.fields.trimmed + self.vanished

    @property
    def end(self) -> int:
        """Absolute position just past the last chunk in the list."""
        return self.trimmed + self.length

    @property
    def counted(self) -> int | None:
        """Chunks the producer says it pushed (meta `chunk_count`), if it keeps a count."""
        return self.fields.counted

    @property
    def seq_base(self) -> int | None:
        """The sequence number this buffer life began at (None: not a sequenced stream)."""
        return self.fields.seq_base

    @property
    def gaps(self) -> int:
        """Sequence numbers the producer skipped (chunks it never delivered)."""
        return self.fields.gaps

    @property
    def finished(self) -> bool:
        """Whether the producer marked the stream finished."""
        return self.fields.finished

    @property
    def quarantined(self) -> bool:
        """Whether compaction set this buffer aside after too many failures."""
        return self.fields.quarantined

    @property
    def orphaned(self) -> bool:
        """Whether compaction set this buffer aside because its row does not exist."""
        return self.fields.orphaned


def _average(chunks: list[bytes]) -> int:
    """Mean chunk size in bytes (0 for none)."""
    return sum(map(len, chunks)) // len(chunks) if chunks else 0


class CompactionProtocol:
    """What compaction does to a buffer in Redis, each step one atomic script or transaction."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        ttl: int,
        clock: IsoClock | None = None,
    ) -> None:
        self.target = target
        self.ttl = ttl
        self.clock = clock or IsoClock()
        self.scripts = ScriptRunner(target)

    def snapshot(
        self,
        key: str,
        held: tuple[str, int] | None = None,
        page: int = READ_PAGE,
        *,
        read_only: bool = False,
        window: int = 0,
        shifts: tuple[int, ...] = (),
        known: MetaRead | None = None,
    ) -> BufferSnapshot:
        """Read length and meta atomically, give the stream an id, and lease its TTL.

        ``held`` is (stream id, chunks of it already persisted): the first page of
        chunks after those comes back in the same round trip. ``read_only`` (a dry
        run) writes nothing at all: no stream id, no lease, no correction stored.
        ``window``: how many chunks before the held position to return as well, for
        the held stream, or else at each of ``shifts`` (supposed `trimmed` values).
        """
        stream, offset = held if held is not None else (None, 0)
        layout = layout_of(self.target, key)
        call = SnapshotArgs(
            chunks_key=key,
            state_key=layout.state_key(key),
            new_stream_id=uuid.uuid4().hex,
            lease=LEASE_SECONDS,
            ttl=self.ttl,
            held_stream=stream,
            held=offset,
            page=page,
            mode=Mode.READ_ONLY if read_only else Mode.WRITE,
            window=window,
            shifts=shifts,
        )
        produced, reply = layout.snapshot(self.scripts, call, LEASE_SECONDS, known)
        if reply.tag == SnapshotTag.MISSING:
            return BufferSnapshot(key=key, exists=False)
        return BufferSnapshot(
            key=key,
            exists=True,
            length=reply.length,
            meta={**produced, **reply.state},
            first_page=reply.page,
            first_page_at=reply.page_at,
            vanished=reply.vanished,
            windows=reply.windows,
        )

    def read_metas(self, chunks: Sequence[str]) -> dict[str, MetaRead]:
        """The meta hashes that snapshots of ``chunks`` would read apart (split lists on a
        Redis Cluster), read now, for a batch, in one round trip to each node; pass each
        to ``snapshot`` as ``known``. Leased as a snapshot leases them."""
        found: dict[str, MetaRead] = {}
        by_layout: dict[Layout, list[str]] = {}
        for name in chunks:
            by_layout.setdefault(layout_of(self.target, name), []).append(name)
        for layout, names in by_layout.items():
            found.update(layout.read_metas(self.scripts, names, LEASE_SECONDS))
        return found

    def read(
        self,
        snapshot: BufferSnapshot,
        start: int,
        end: int,
        page: int = READ_PAGE,
        page_bytes: int = PAGE_BYTES,
    ) -> Iterator[list[bytes]]:
        """Yield pages of the chunks at absolute positions ``start`` to ``end`` (exclusive),
        of at most ``page`` chunks and about ``page_bytes`` bytes.

        When ``start`` is where the snapshot's first page begins, that page is used
        rather than read again; any other start reads from Redis.
        """
        stream = snapshot.stream_id or ""
        position = start
        if snapshot.first_page and start == snapshot.first_page_at and start < end:
            first = snapshot.first_page[: end - start]
            yield first
            position += len(first)
        trimmed = snapshot.trimmed
        weight = _average(snapshot.first_page)
        with redis_errors(self.target.url):
            while position < end:
                # pages of about PAGE_BYTES: a byte cap is overshot by one page at most
                count = page if weight == 0 else max(1, min(page, page_bytes // weight))
                last = min(position + count, end) - 1
                chunks, trimmed = self._read_page(
                    snapshot.key,
                    stream,
                    (position, last),
                    trimmed=trimmed,
                    vanished=snapshot.vanished,
                )
                if len(chunks) != last - position + 1:
                    raise StreamChanged(
                        f"buffer {snapshot.key} lost chunks while it was read "
                        f"(expected {last - position + 1}, got {len(chunks)})",
                        hint="nothing was written; run the command again",
                    )
                yield chunks
                weight = _average(chunks) or weight
                position = last + 1

    def _read_page(
        self, key: str, stream: str, span: tuple[int, int], *, trimmed: int, vanished: int = 0
    ) -> tuple[list[bytes], int]:
        """Chunks at absolute positions ``span`` (first, last), and the `trimmed` they assume.

        A native LRANGE inside MULTI/EXEC with the meta fields its indexes depend on
        (a Lua script converting every chunk to a Lua string and back cost twice
        as much); when a concurrent acknowledgement moved `trimmed`, read again.
        """
        first, last = span
        meta = layout_of(self.target, key).state_key(key)
        for _ in range(16):
            pipe = self.target.client.pipeline(transaction=True)
            pipe.hmget(meta, [fields.STREAM_ID, fields.TRIMMED])
            pipe.lrange(key, first - trimmed, last - trimmed)
            (seen_stream, seen_trimmed), chunks = pipe.execute()
            if ("" if seen_stream is None else text(seen_stream)) != stream:
                raise StreamChanged(
                    f"buffer {key} was replaced while it was read",
                    hint="nothing was written; run the command again",
                )
            now = int(seen_trimmed or 0) + vanished
            if now == trimmed:
                return list(chunks), trimmed
            if first < now:  # acknowledged past what this read still needs
                break
            trimmed = now
        raise StreamChanged(
            f"buffer {key} was trimmed while it was read",
            hint="nothing was written; run the command again",
        )

    def acknowledge(
        self, key: str, stream_id: str, persisted: int, delete: bool
    ) -> tuple[int, bool, int]:
        """Trim chunks below ``persisted`` (committed); with ``delete`` drop emptied keys.

        Returns (chunks trimmed, keys deleted, chunks left).
        """
        ((_, acked),) = self.acknowledge_each_after([(None, key, stream_id, persisted)], delete)
        if isinstance(acked, Exception):
            raise acked
        return acked

    def acknowledge_each_after(
        self, acks: Sequence[tuple[tuple[Any, ...] | None, str, str, int]], delete: bool
    ) -> list[tuple[Any, tuple[int, bool, int] | Exception]]:
        """For each (command or None, key, stream id, persisted): the command (a completion
        event's XADD), then ``acknowledge``; all in one round trip (a pipeline: on a Redis
        Cluster each node is sent its share at once), the deleted lives' after-steps in
        the layout's trips. For each: the command's reply and what ``acknowledge``
        returns, or the error reply that refused the acknowledgement (neither raised); an
        outage is raised."""
        calls = [
            self._ack_call(key, stream, persisted, delete) for _, key, stream, persisted in acks
        ]
        with redis_errors(self.target.url):
            replies = self.scripts.run_each_beside(
                [(ack[0], call) for ack, call in zip(acks, calls, strict=True)]
            )
            deleted: dict[Layout, list[DeletedLife]] = {}
            for call, (_, reply) in zip(calls, replies, strict=True):
                if not isinstance(reply, Exception) and reply.deleted:
                    layout = layout_of(self.target, call.chunks_key)
                    deleted.setdefault(layout, []).append(
                        DeletedLife(call.chunks_key, reply.life, call.stream_id, reply.ended_ttl)
                    )
            for layout, lives in deleted.items():
                layout.after_deletes(self.scripts, lives)
        return [
            (before, reply if isinstance(reply, Exception) else _acked(reply))
            for before, reply in replies
        ]

    def _ack_call(self, key: str, stream_id: str, persisted: int, delete: bool) -> AckArgs:
        """ack.lua's arguments for ``key``."""
        layout = layout_of(self.target, key)
        return AckArgs(
            chunks_key=key,
            state_key=layout.state_key(key),
            stream_id=stream_id,
            persisted=persisted,
            when_empty=WhenEmpty.DELETE if delete else WhenEmpty.KEEP,
            layout=layout.ack,
        )

    def acknowledge_many(self, acks: list[tuple[str, str, int]], delete: bool) -> int:
        """Acknowledge several committed compactions (key, stream id, persisted) in one trip.

        Returns how many buffers were deleted; the first error reply is raised.
        """
        if not acks:
            return 0
        # acknowledgements are idempotent: calls refused (NOSCRIPT) are sent again
        results = self.acknowledge_each_after([(None, *ack) for ack in acks], delete)
        deleted = 0
        for _, acked in results:
            if isinstance(acked, Exception):
                raise acked
            deleted += acked[1]
        return deleted

    def record_failure(self, key: str, error: str, max_attempts: int) -> tuple[int, bool]:
        """Count a failed compaction of ``key``; returns (attempts, quarantined).

        Both keys get a TTL if they have none, so a buffer set aside still expires.
        """
        from genbuffer.lua.fail import SetAside  # noqa: PLC0415  (a failure's path only)

        return self._set_aside(key, error, max_attempts, SetAside.QUARANTINED)

    def mark_orphaned(self, key: str, error: str) -> bool:
        """Set aside a buffer whose row does not exist; True the first time (report it once)."""
        from genbuffer.lua.fail import SetAside  # noqa: PLC0415  (an orphan's path only)

        attempts, _ = self._set_aside(key, error, 1, SetAside.ORPHANED)
        return attempts == 1

    def _set_aside(self, key: str, error: str, limit: int, aside: SetAside) -> tuple[int, bool]:
        from genbuffer.lua.fail import FailArgs  # noqa: PLC0415  (fail.lua: failures only)

        call = FailArgs(
            state_key=layout_of(self.target, key).state_key(key),
            chunks_key=key,
            error=" ".join(error.split())[:500],
            limit=limit,
            now=self.clock.now(),
            ttl=self.ttl,
            set_aside=aside,
        )
        with redis_errors(self.target.url):
            reply = self.scripts.run(call)
        return reply.attempts, reply.set_aside

    def clear_failures(self, key: str) -> None:
        """Forget failed attempts (and a quarantine or orphan mark) after a compaction."""
        with redis_errors(self.target.url):
            state = layout_of(self.target, key).state_key(key)
            self.target.client.hdel(state, *fields.FAILURE_FIELDS)


def _acked(reply: AckReply) -> tuple[int, bool, int]:
    """What ``acknowledge`` returns: chunks trimmed, keys deleted, chunks left."""
    return reply.trimmed, reply.deleted, reply.left
