"""The worker fleet: each `genbuf worker`'s heartbeat, and the rules the fleet shares.

Every worker writes one field of one hash (``keys.fleet_key``) every
``HEARTBEAT_EVERY`` seconds: its consumer name -> when it beat (epoch seconds, this
host's clock) and the options it runs with. A worker is alive while its last beat is
younger than ``ALIVE_WITHIN``; one that stops cleanly removes its field, one that was
killed stays, dead, until ``FORGET_AFTER``. ``status``, ``metrics`` and ``doctor``
read the live ones; the sweep holder reads the fleet's rule (``FleetRule``) from them,
so every sweep judges idleness the same way whichever worker holds the sweep lock.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from genbuffer import keys
from genbuffer.redis.connection import RedisTarget, redis_errors, text

__all__ = ["ALIVE_WITHIN", "HEARTBEAT_EVERY", "Fleet", "FleetRule", "WorkerBeat"]

HEARTBEAT_EVERY = 5.0  # seconds between a worker's beats
ALIVE_WITHIN = 30.0  # seconds: a worker whose last beat is older is taken for dead
FORGET_AFTER = 86400  # seconds a dead worker's beat is kept (and the hash's TTL)


@dataclass(frozen=True)
class WorkerBeat:
    """One worker's last heartbeat: who, when, and the options it runs with."""

    consumer: str
    at: float  # epoch seconds
    idle_seconds: float | None  # --idle (None: it does not ask for idle buffers)
    sweep_every_seconds: float
    visibility_seconds: float
    concurrency: int

    def alive(self, now: float) -> bool:
        """Whether it beat within ``ALIVE_WITHIN`` of ``now``."""
        return now - self.at < ALIVE_WITHIN


@dataclass(frozen=True)
class FleetRule:
    """What every sweep applies, whichever worker holds the lock: the shortest --idle
    and the shortest --sweep-every any live worker was given (so no worker's option
    is ever ignored for another's)."""

    idle_seconds: float | None
    sweep_every_seconds: float

    @classmethod
    def of(cls, beats: list[WorkerBeat]) -> FleetRule:
        """The rule of these (live) workers; at least one is needed."""
        idles = [b.idle_seconds for b in beats if b.idle_seconds is not None]
        return cls(
            idle_seconds=min(idles) if idles else None,
            sweep_every_seconds=min(b.sweep_every_seconds for b in beats),
        )


class Fleet:
    """The heartbeat hash."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.key = keys.fleet_key(target.prefix)

    def beat(self, beat: WorkerBeat) -> None:
        """Record a worker's heartbeat (and keep the hash alive while anyone beats)."""
        value = json.dumps({k: v for k, v in asdict(beat).items() if k != "consumer"})
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            pipe.hset(self.key, beat.consumer, value)
            pipe.expire(self.key, FORGET_AFTER)
            pipe.execute()

    def leave(self, consumer: str) -> None:
        """A worker that stops cleanly is no longer counted."""
        with redis_errors(self.target.url):
            self.target.client.hdel(self.key, consumer)

    def members(self) -> list[WorkerBeat]:
        """Every worker's last beat younger than ``FORGET_AFTER``, alive or not (a field
        that does not parse is skipped). Read-only."""
        return [beat for beat in self._beats() if time.time() - beat.at <= FORGET_AFTER]

    def forget_dead(self) -> int:
        """Drop the beats older than ``FORGET_AFTER`` (workers killed long ago), and fields
        something else wrote; how many (the sweep holder does this)."""
        now = time.time()
        with redis_errors(self.target.url):
            raw = self.target.client.hgetall(self.key)
        stale = [
            name
            for name, value in raw.items()
            if (beat := _parse(text(name), text(value))) is None or now - beat.at > FORGET_AFTER
        ]
        if stale:
            with redis_errors(self.target.url):
                self.target.client.hdel(self.key, *stale)
        return len(stale)

    def _beats(self) -> list[WorkerBeat]:
        with redis_errors(self.target.url):
            raw = self.target.client.hgetall(self.key)
        found = [_parse(text(name), text(value)) for name, value in raw.items()]
        return sorted((beat for beat in found if beat is not None), key=lambda b: b.consumer)

    def alive(self) -> list[WorkerBeat]:
        """The workers whose last beat is recent."""
        now = time.time()
        return [beat for beat in self.members() if beat.alive(now)]


def _parse(consumer: str, value: str) -> WorkerBeat | None:
    """A field of the hash as a beat; None if something else wrote it."""
    try:
        fields = json.loads(value)
        idle = fields.get("idle_seconds")
        return WorkerBeat(
            consumer=consumer,
            at=float(fields["at"]),
            idle_seconds=None if idle is None else float(idle),
            sweep_every_seconds=float(fields["sweep_every_seconds"]),
            visibility_seconds=float(fields["visibility_seconds"]),
            concurrency=int(fields["concurrency"]),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
