"""Compaction events: a Redis stream that producers announce finished buffers on, read
by `genbuf worker` processes through one consumer group.

A delivery is acknowledged only after its compaction is done (or found needless);
an entry whose worker died is taken over after a visibility timeout (XAUTOCLAIM).
Duplicates are harmless: compaction is idempotent. The stream is capped (MAXLEN ~)
and expires with the chunk TTL when nothing is announced, since the sweeper finds
every buffer the stream lost.

What the server does to the stream is a value, not a crash: a read the server ended
(the stream deleted, expired or moved to another node by a reshard, a failover that
made its node a replica) or a group that is gone comes back as ``Delivery.interrupted``
(the group is created again), and an entry that names no buffer (``Malformed``) is
parked (``park``): acknowledged, and kept on another stream for a person.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from genbuffer import keys
from genbuffer.errors import OperationFailed, UsageError
from genbuffer.redis.connection import RedisTarget, redis_errors, text
from genbuffer.redis.direct import MOVED, raise_first, send_on_one_key
from genbuffer.states import Selected

__all__ = ["GROUP", "Backlog", "Delivery", "Event", "Events", "Malformed"]

GROUP = "genbuf-workers"
MAX_LENGTH = 100_000  # entries kept (approximately) when nothing reads them
PARKED_MAX_LENGTH = 10_000  # parked entries kept (approximately)
PARKED_TTL = 30 * 86400  # seconds a parked entry stays readable after the last one parked
PAGE = 1000  # entries per XRANGE when the sweeper lists what is queued
# Replies that say the server ended a blocked read or lost the group, not that genbuf
# asked for something wrong: the next read goes on (creating the group again if needed).
_INTERRUPTIONS = ("UNBLOCKED", "NOGROUP")


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
class Malformed:
    """An entry that names no buffer (a field missing, or not a positive id): parked."""

    entry: str
    fields: dict[str, str]
    reason: str


@dataclass(frozen=True)
class Delivery:
    """What one read or take-over brought: events to compact, malformed entries to park,
    what the server did instead of delivering (``interrupted``, one line), and where the
    next take-over starts (``cursor``; "0-0" when the pending list was gone through)."""

    events: list[Event] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    interrupted: str | None = None
    cursor: str = "0-0"


@dataclass(frozen=True)
class Backlog:
    """The worker queue as it stands: entries not yet done (acknowledged entries are
    deleted), those a worker holds, and when the oldest entry was announced (its id's
    timestamp). The workers alive are the fleet's (``genbuffer.redis.fleet``)."""

    entries: int
    pending: int
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
        commands = self.announcement(
            organization_id, generation_id, scenario_id, idle=idle, key=key, why=why
        )
        with redis_errors(self.target.url):
            send_on_one_key(self.target, commands)

    def announcement(
        self,
        organization_id: int,
        generation_id: int,
        scenario_id: int | None = None,
        *,
        idle: bool = False,
        key: str | None = None,
        why: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """``announce``'s commands (XADD, capped, then the stream's TTL), to be sent in a
        pipeline of the caller's (the producer's finish() sends its mark with them)."""
        fields: list[Any] = ["org", organization_id, "gen", generation_id, "idle", int(idle)]
        if scenario_id is not None:
            fields += ["scenario", scenario_id]
        if key is not None:
            fields += ["key", key]
        if why is not None:
            fields += ["why", why]
        return [
            ("XADD", self.stream, "MAXLEN", "~", MAX_LENGTH, "*", *fields),
            ("EXPIRE", self.stream, self.ttl),
        ]

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

    def take_over(self, consumer: str, idle_ms: int, count: int, start: str = "0-0") -> Delivery:
        """Entries delivered to another worker and not acknowledged for ``idle_ms``, from
        ``start`` in the pending list (the reply's ``cursor`` goes on from there)."""
        with redis_errors(self.target.url):
            try:
                reply = self.target.client.xautoclaim(
                    self.stream, GROUP, consumer, min_idle_time=idle_ms, start_id=start, count=count
                )
            except redis.exceptions.ResponseError as error:
                return self._interrupted(error)
        # [next start, [(entry, fields), …], deleted ids]; an entry deleted meanwhile comes
        # back without fields: nothing to do for it
        claimed: list[tuple[bytes, dict[bytes, bytes]]] = list(reply[1])
        delivery = _delivery([(entry, fields) for entry, fields in claimed if fields], taken=True)
        return Delivery(delivery.events, delivery.malformed, cursor=text(reply[0]))

    def read(self, consumer: str, count: int, block_ms: int, done: Sequence[str] = ()) -> Delivery:
        """New entries for this worker, waiting up to ``block_ms`` for one. ``done``
        (entries finished since the last read) are acknowledged first, in the same round
        trip. On a Redis Cluster the trip goes to the stream's node as it is: redis-py's
        cluster client asks the server for XREADGROUP's keys (COMMAND GETKEYS) before
        every read, a round trip more; a node that no longer holds the stream (MOVED, a
        failover) sends the read through the cluster client, which follows it."""
        if self.target.cluster:
            client: Any = self.target.client
            try:
                node = client.get_redis_connection(client.get_node_from_key(self.stream))
                return self._read(node, consumer, count, block_ms, done)
            except MOVED:  # (the cluster client's errors are the ones reported)
                pass
            if done:
                self.acknowledge(list(done))
                done = ()
        with redis_errors(self.target.url):
            return self._read(self.target.client, consumer, count, block_ms, done)

    def _read(
        self, client: Any, consumer: str, count: int, block_ms: int, done: Sequence[str]
    ) -> Delivery:
        try:
            if done:
                pipe = client.pipeline(transaction=False)
                pipe.xack(self.stream, GROUP, *done)
                pipe.xdel(self.stream, *done)
                pipe.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms)
                # the errors as the server said them: raise_on_error words the first one
                # "Command # 3 (XREADGROUP …) of pipeline caused error: NOGROUP …", which
                # _interrupted would not take for the interruption it is
                reply = raise_first(pipe.execute(raise_on_error=False))[-1]
            else:
                reply = client.xreadgroup(
                    GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
                )
        except MOVED:
            raise
        except redis.exceptions.ResponseError as error:
            return self._interrupted(error)
        # [[stream, [(entry, fields), …]]] (RESP2; a dict under RESP3), None if nothing came
        found: Any = reply or []
        streams = found.values() if isinstance(found, dict) else [e for _, e in found]
        return _delivery([item for entries in streams for item in entries])

    def _interrupted(self, error: redis.exceptions.ResponseError) -> Delivery:
        """A read the server ended (the stream deleted, expired or moved, a failover) or a
        group that is gone (the stream expired or was deleted): create the group again
        and say what happened. Any other refusal is the caller's to report."""
        said = " ".join(str(error).split())
        if not said.startswith(_INTERRUPTIONS):
            try:
                with redis_errors(self.target.url):  # CLUSTERDOWN, READONLY, …: an outage
                    raise error
            except redis.exceptions.ResponseError:  # WRONGTYPE and the like
                raise OperationFailed(
                    f"Redis refused to read the compaction-events stream {self.stream}: {said}",
                    hint="is something else writing that key?",
                ) from None
        self.ensure_group()
        return Delivery(interrupted=f"the server ended the read ({said[:200]}); reading again")

    def park(self, bad: Malformed) -> None:
        """Take a malformed entry out of the queue: copied to the parked stream (its id,
        why, its fields as JSON), then acknowledged and deleted. A crash between the two
        parks it twice, never loses it."""
        parked = keys.parked_events_key(self.target.prefix)
        record: dict[bytes | bytearray | memoryview | str | int | float, Any] = {
            "entry": bad.entry,
            "reason": bad.reason,
            "parked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fields": json.dumps(bad.fields, ensure_ascii=False),
        }
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            pipe.xadd(parked, record, maxlen=PARKED_MAX_LENGTH, approximate=True)
            pipe.expire(parked, PARKED_TTL)
            pipe.execute()
        self.acknowledge([bad.entry])

    def parked(self) -> int:
        """How many parked entries are kept (for status and metrics)."""
        with redis_errors(self.target.url):
            return int(self.target.client.xlen(keys.parked_events_key(self.target.prefix)))

    def queued(self) -> set[tuple[int, int]]:
        """(organization, generation) of every entry in the stream: announced and not
        done (done entries are deleted), delivered or not. The sweeper announces only
        buffers that have none."""
        found: set[tuple[int, int]] = set()
        for page in self._pages():
            for item in _delivery(page).events:
                found.add((item.organization_id, item.generation_id))
        return found

    def _pages(self) -> Iterator[list[tuple[Any, dict[bytes, bytes]]]]:
        """The stream's entries in pages of ``PAGE`` (XRANGE, oldest first)."""
        start = "-"
        while True:
            with redis_errors(self.target.url):
                page: Any = self.target.client.xrange(self.stream, min=start, count=PAGE) or []
            if not page:
                return
            yield [(entry, fields) for entry, fields in page if fields]
            if len(page) < PAGE:
                return
            start = "(" + text(page[-1][0])

    def acknowledge(self, entries: list[str]) -> None:
        """Done with these entries: acknowledged and removed from the stream (a stream
        or group that is gone meanwhile has nothing left to acknowledge)."""
        if not entries:
            return
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            pipe.xack(self.stream, GROUP, *entries)
            pipe.xdel(self.stream, *entries)
            pipe.execute()

    def retire(self, consumer: str) -> bool:
        """Remove a stopping worker from the group, unless it still holds an entry (that
        one stays pending, for another worker to take over); whether it was removed."""
        client = self.target.client
        with redis_errors(self.target.url):
            try:
                held = client.xpending_range(
                    self.stream, GROUP, min="-", max="+", count=1, consumername=consumer
                )
                if held:
                    return False
                client.xgroup_delconsumer(self.stream, GROUP, consumer)
            except redis.exceptions.ResponseError:  # NOGROUP: nothing to leave
                return False
        return True

    def try_sweep(self, holder: str, period_ms: int) -> bool:
        """Whether this worker sweeps now: at most one sweep a period across the fleet.
        A lock without an expiry (set by hand, or another type of value: genbuf writes
        none) would stop every sweep for good: it is given one period to live."""
        lock = keys.sweeper_lock_key(self.target.prefix)
        client = self.target.client
        with redis_errors(self.target.url):
            if client.set(lock, holder, nx=True, px=period_ms):
                return True
            if client.pttl(lock) == -1:  # -2: gone meanwhile; >= 0: a holder's period
                client.pexpire(lock, period_ms)
            return False


def _delivery(items: list[tuple[Any, dict[bytes, bytes]]], *, taken: bool = False) -> Delivery:
    """Entries as events to compact, and those that name no buffer."""
    events: list[Event] = []
    malformed: list[Malformed] = []
    for entry, fields in items:
        parsed = _event(entry, fields, taken=taken)
        if isinstance(parsed, Malformed):
            malformed.append(parsed)
        else:
            events.append(parsed)
    return Delivery(events, malformed)


def _event(
    entry: bytes | str, fields: dict[bytes, bytes], *, taken: bool = False
) -> Event | Malformed:
    """One entry as an Event, or as Malformed with the reason (never raises)."""
    values = {text(k): text(v) for k, v in fields.items()}
    try:
        organization = keys.validate_id(values.get("org"), "org")
        generation = keys.validate_id(values.get("gen"), "gen")
        scenario = values.get("scenario")
        scenario_id = keys.validate_id(scenario, "scenario") if scenario else None
    except UsageError as error:
        return Malformed(entry=text(entry), fields=values, reason=error.message)
    return Event(
        entry=text(entry),
        organization_id=organization,
        generation_id=generation,
        scenario_id=scenario_id,
        idle=values.get("idle") == "1",
        key=values.get("key") or None,
        why=_why(values),
        deliveries_before=taken,
    )


_REASONS = frozenset(Selected)


def _why(values: dict[str, str]) -> str | None:
    """The sweeper's reason: one it gives, or none (any other text is the entry's own,
    and would end up in the row's metadata)."""
    why = values.get("why")
    if why in _REASONS:
        return why
    return Selected.IDLE.value if values.get("idle") == "1" else None
