"""Compaction events: a Redis stream that producers announce finished buffers on, read
by `genbuf worker` processes through one consumer group.

A delivery is acknowledged only after its compaction is done (or found needless);
an entry whose worker died is taken over after a visibility timeout (XAUTOCLAIM).
Duplicates are harmless: compaction is idempotent. The stream is capped (MAXLEN ~)
and expires with the chunk TTL when nothing is announced, since the sweeper finds
every buffer the stream lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from genbuffer import keys
from genbuffer.redis.connection import RedisTarget, redis_errors, text

__all__ = ["GROUP", "Backlog", "Event", "Events"]

GROUP = "genbuf-workers"
MAX_LENGTH = 100_000  # entries kept (approximately) when nothing reads them


@dataclass(frozen=True)
class Event:
    """One delivery: a buffer to compact."""

    entry: str  # the stream entry id
    organization_id: int
    generation_id: int
    scenario_id: int | None
    idle: bool  # announced by the sweeper as idle (kept for workers before `why`)
    key: str | None = None  # the chunks key, when the announcer named it
    why: str | None = None  # why the sweeper announced it: finished, idle or at_risk
    deliveries_before: bool = False  # taken over from a worker that did not finish it


@dataclass(frozen=True)
class Backlog:
    """The worker queue as it stands: entries not yet done (acknowledged entries are
    deleted), those a worker holds, the workers that read, and when the oldest entry
    was announced (its id's timestamp)."""

    entries: int
    pending: int
    consumers: int
    oldest_entry_ms: int | None


class Events:
    """The stream and its consumer group."""

    def __init__(self, target: RedisTarget, *, ttl: int) -> None:
        self.target = target
        self.ttl = ttl
        self.stream = keys.events_key(target.prefix)

    def announce(
        self,
        organization_id: int,
        generation_id: int,
        scenario_id: int | None = None,
        *,
        idle: bool = False,
        key: str | None = None,
        why: str | None = None,
    ) -> None:
        """Add one buffer to compact (the producer's finish(), or the sweeper); ``key``
        names its chunks key (either template), sparing the worker a lookup; ``why``
        the sweeper's reason (finished, idle or at_risk)."""
        fields: dict[bytes | bytearray | memoryview | str | int | float, Any] = {
            "org": organization_id,
            "gen": generation_id,
            "idle": int(idle),
        }
        if scenario_id is not None:
            fields["scenario"] = scenario_id
        if key is not None:
            fields["key"] = key
        if why is not None:
            fields["why"] = why
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            pipe.xadd(self.stream, fields, maxlen=MAX_LENGTH, approximate=True)
            pipe.expire(self.stream, self.ttl)
            pipe.execute()

    def backlog(self) -> Backlog | None:
        """The queue's figures; None when no stream exists (no producer announces, or it
        expired with nothing in it)."""
        client = self.target.client
        with redis_errors(self.target.url):
            if not client.exists(self.stream):
                return None
            entries = int(client.xlen(self.stream))
            first = client.xrange(self.stream, count=1)
            groups = {text(g["name"]): g for g in client.xinfo_groups(self.stream)}
        group = groups.get(GROUP)
        oldest = int(text(first[0][0] or "0").split("-")[0]) if first else None
        return Backlog(
            entries=entries,
            pending=int(group["pending"]) if group else 0,
            consumers=int(group["consumers"]) if group else 0,
            oldest_entry_ms=oldest,
        )

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless they exist."""
        with redis_errors(self.target.url):
            try:
                self.target.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def take_over(self, consumer: str, idle_ms: int, count: int) -> list[Event]:
        """Entries delivered to another worker and not acknowledged for ``idle_ms``."""
        with redis_errors(self.target.url):
            try:
                reply = self.target.client.xautoclaim(
                    self.stream, GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=count
                )
            except redis.exceptions.ResponseError as error:
                self._recreate_or_raise(error)
                return []
        # [next start, [(entry, fields), …], deleted ids]; an entry deleted meanwhile comes
        # back without fields: nothing to do for it
        claimed: list[tuple[bytes, dict[bytes, bytes]]] = list(reply[1])
        return [_event(entry, fields, taken=True) for entry, fields in claimed if fields]

    def read(self, consumer: str, count: int, block_ms: int) -> list[Event]:
        """New entries for this worker, waiting up to ``block_ms`` for one."""
        with redis_errors(self.target.url):
            try:
                reply = self.target.client.xreadgroup(
                    GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
                )
            except redis.exceptions.ResponseError as error:
                self._recreate_or_raise(error)
                return []
        # [[stream, [(entry, fields), …]]] (RESP2; a dict under RESP3), None if nothing came
        found: Any = reply or []
        streams = found.values() if isinstance(found, dict) else [e for _, e in found]
        return [_event(entry, fields) for entries in streams for entry, fields in entries]

    def _recreate_or_raise(self, error: redis.exceptions.ResponseError) -> None:
        """A stream that expired took its group with it: create both again."""
        if "NOGROUP" not in str(error):
            raise error
        self.ensure_group()

    def acknowledge(self, entries: list[str]) -> None:
        """Done with these entries: acknowledged and removed from the stream."""
        if not entries:
            return
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            pipe.xack(self.stream, GROUP, *entries)
            pipe.xdel(self.stream, *entries)
            pipe.execute()

    def try_sweep(self, holder: str, period_ms: int) -> bool:
        """Whether this worker sweeps now: at most one sweep a period across the fleet."""
        with redis_errors(self.target.url):
            return bool(
                self.target.client.set(
                    keys.sweeper_lock_key(self.target.prefix), holder, nx=True, px=period_ms
                )
            )


def _event(entry: bytes | str, fields: dict[bytes, bytes], *, taken: bool = False) -> Event:
    values = {text(k): text(v) for k, v in fields.items()}
    scenario = values.get("scenario")
    return Event(
        entry=text(entry),
        organization_id=int(values["org"]),
        generation_id=int(values["gen"]),
        scenario_id=int(scenario) if scenario else None,
        idle=values.get("idle") == "1",
        key=values.get("key") or None,
        why=values.get("why") or ("idle" if values.get("idle") == "1" else None),
        deliveries_before=taken,
    )
