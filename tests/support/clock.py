"""Time passing for a buffer, without waiting for it.

genbuf judges a buffer by times it stores (the producer's ``last_chunk_at``, its
own looks' ``seen_at``), by its keys' TTLs and, where it reads with CLIENT NO-TOUCH,
by the list's LRU clock. A test that needs a buffer idle for ``--idle``, or its TTL
run down under GENERATION_EXPIRY_MARGIN, moves those back by the time it would
have waited: what a real run then reads is what it would read that much later
(in-process code takes a ``now`` instead: ``select_buffers``, ``compact_pending``).
"""

from __future__ import annotations

from datetime import UTC, timedelta

from genbuffer import keys
from genbuffer.redis import GenerationBuffer
from genbuffer.redis import meta as fields
from genbuffer.redis.layout import layout_of
from genbuffer.redis.meta import parse_time

__all__ = ["TIME_FIELDS", "let_time_pass"]

# every field of a buffer's hashes that holds a time (genbuffer.redis.meta)
TIME_FIELDS = (
    fields.FIRST_CHUNK_AT,
    fields.LAST_CHUNK_AT,
    fields.FINISHED_AT,
    fields.QUARANTINED_AT,
    fields.ORPHANED_AT,
    fields.SEEN_AT,
)


def let_time_pass(buffer: GenerationBuffer, key: str, by: timedelta) -> None:
    """Make the buffer at ``key`` (its list, meta hash and genbuf's state hash) look
    as it would ``by`` later with nothing written: its stored times ``by`` earlier,
    its TTLs ``by`` shorter (a key whose TTL runs out is deleted, as the server would
    have expired it), and under NO-TOUCH its list idle ``by`` longer."""
    client = buffer.client
    by_ms = int(by.total_seconds() * 1000)
    for name in sorted({key, keys.meta_key(key), layout_of(buffer.target, key).state_key(key)}):
        ttl_ms = int(client.pttl(name))
        if ttl_ms == -2:  # no such key
            continue
        if 0 <= ttl_ms <= by_ms:
            client.delete(name)
            continue
        kind = client.type(name)
        if kind in (b"hash", "hash"):
            _move_times_back(buffer, name, by)
        elif name == key and buffer.target.no_touch.active:
            _idle_longer(buffer, name, ttl_ms, by)
        if ttl_ms > 0:
            client.pexpire(name, ttl_ms - by_ms)


def _move_times_back(buffer: GenerationBuffer, name: str, by: timedelta) -> None:
    """Each time field of the hash ``name``, ``by`` earlier (in genbuf's own format)."""
    stored = buffer.client.hmget(name, list(TIME_FIELDS))
    for field, raw in zip(TIME_FIELDS, stored, strict=True):
        at = parse_time(raw.decode() if isinstance(raw, bytes) else raw)
        if at is not None:
            earlier = (at - by).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            buffer.client.hset(name, field, earlier)


def _idle_longer(buffer: GenerationBuffer, name: str, ttl_ms: int, by: timedelta) -> None:
    """The list's LRU clock ``by`` further back: RESTORE … IDLETIME sets it, the one way
    a server lets it be set (the value and TTL written back as they were)."""
    client = buffer.client
    idle = int(client.object("idletime", name) or 0)
    dumped = client.dump(name)
    assert isinstance(dumped, bytes)
    client.restore(
        name,
        max(ttl_ms, 0),
        dumped,
        replace=True,
        idletime=idle + int(by.total_seconds()),
    )
