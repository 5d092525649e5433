"""The meta hash beside each chunks list: its fields, its TTL rules, and a typed view.

Every writer of a buffer (push.lua, the one push script, however
``genbuffer.redis.layout`` sends it; a Laravel producer) and every reader
(snapshot.lua, ack.lua, fail.lua, observe.lua, discovery) agrees on the fields named
here; a test checks that the Lua scripts use no other.

TTL rules, written once in push.lua and the same on every push path
(``tests/test_push_paths.py`` runs them all):

1. A push gives each of the two keys the configured TTL when it has none, so
   nothing genbuf writes lives forever.
2. A push that creates the list raises the meta hash's TTL to at least the
   configured TTL: a meta hash never expires before the list it describes.
3. Nothing else moves a TTL on the producer's side: a push does not refresh
   it (the buffer of an abandoned stream expires on time). Compaction leases
   a buffer it reads (snapshot.lua), and fail.lua gives keys set aside a TTL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from genbuffer.states import BufferState

__all__ = [
    "BY_GENBUF",
    "BY_PRODUCER",
    "FIELDS",
    "BufferMeta",
    "IsoClock",
    "Observation",
    "as_count",
    "as_int",
    "parse_time",
]

# Written by a producer (genbuf's push paths; a Laravel producer writes some of them).
CHUNK_COUNT = "chunk_count"  # chunks appended to this life of the buffer
BYTES = "bytes"  # their total length
FIRST_CHUNK_AT = "first_chunk_at"
LAST_CHUNK_AT = "last_chunk_at"
FINISHED_AT = "finished_at"  # the producer marked the stream finished
ORGANIZATION_ID = "organization_id"
SCENARIO_ID = "scenario_id"
GENERATION_ID = "generation_id"
STREAM_ID = "stream_id"  # one life of the buffer (also given by snapshot.lua)
SEQ_BASE = "seq_base"  # sequenced pushes: the sequence number this life began at
GAPS = "gaps"  # sequenced pushes: numbers skipped (chunks never delivered)

# Written by genbuf's compaction side.
TRIMMED = "trimmed"  # chunks acknowledged and removed from the head of the list
EXPIRED = "expired"  # chunks that vanished from the head before compaction
ATTEMPTS = "attempts"  # failed compactions
LAST_ERROR = "last_error"
QUARANTINED_AT = "quarantined_at"  # set aside after COMPACTION_MAX_ATTEMPTS failures
ORPHANED_AT = "orphaned_at"  # set aside: the buffer has no row
# observe.lua (genbuffer.engine.idleness): chunks this life held (trimmed + length) when a
# compactor last looked, when it first saw that many, and whether that first look
# was genbuf's first at the buffer ('1') or saw the count move ('0')
SEEN_END = "seen_end"
SEEN_AT = "seen_at"
SEEN_FIRST = "seen_first"
# A split list on a cluster (genbuffer.redis.layout.Split): its life was deleted, the app's
# meta hash not yet released (in {K}:genbuf); the life a meta hash last gave up.
ENDED = "ended"
RELEASED = "released"

BY_PRODUCER = frozenset(
    {
        CHUNK_COUNT,
        BYTES,
        FIRST_CHUNK_AT,
        LAST_CHUNK_AT,
        FINISHED_AT,
        ORGANIZATION_ID,
        SCENARIO_ID,
        GENERATION_ID,
        STREAM_ID,
        SEQ_BASE,
        GAPS,
    }
)
BY_GENBUF = frozenset(
    {
        TRIMMED,
        EXPIRED,
        ATTEMPTS,
        LAST_ERROR,
        QUARANTINED_AT,
        ORPHANED_AT,
        SEEN_END,
        SEEN_AT,
        SEEN_FIRST,
        ENDED,
        RELEASED,
    }
)
FIELDS = BY_PRODUCER | BY_GENBUF
# what a compaction clears once it succeeds
FAILURE_FIELDS = (ATTEMPTS, LAST_ERROR, QUARANTINED_AT, ORPHANED_AT)
# what the idle rule reads of a buffer's state hash (genbuffer.engine.idleness)
IDLE_FIELDS = (LAST_CHUNK_AT, TRIMMED, SEEN_END, SEEN_AT, SEEN_FIRST)
# what discovery reads of each buffer (state and idle time)
DISCOVERY_FIELDS = (FINISHED_AT, QUARANTINED_AT, ORPHANED_AT, CHUNK_COUNT, *IDLE_FIELDS)


_COUNT = re.compile(r"[0-9]{1,15}")
_SEQ_BASE = re.compile(r"-?[0-9]{1,15}")


def as_count(value: object) -> int | None:
    """A counter as stored: a non-negative integer of at most 15 digits, else None, as
    for an absent field. The Lua scripts' ``whole`` is the same rule (text, 1e400,
    nan, -5 or 1.5 is no count anything writes: a script must not stop on one)."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return int(text) if isinstance(text, str) and _COUNT.fullmatch(text) else None


def as_int(value: object, default: int = 0) -> int:
    """A counter as stored (text), or ``default`` when absent or not a count."""
    found = as_count(value)
    return default if found is None else found


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as written by producers (UTC when it has no zone)."""
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@dataclass(frozen=True)
class BufferMeta:
    """A read of the meta hash (text fields), with the values compaction decides on."""

    fields: Mapping[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        """One field as stored."""
        return self.fields.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    @property
    def stream_id(self) -> str | None:
        """The id of this life of the buffer (None for a meta hash without one)."""
        return self.fields.get(STREAM_ID)

    @property
    def trimmed(self) -> int:
        """Chunks of this life acknowledged and removed from the list."""
        return as_int(self.fields.get(TRIMMED))

    @property
    def counted(self) -> int | None:
        """Chunks the producer says it pushed, if it keeps a count."""
        return as_count(self.fields.get(CHUNK_COUNT))

    @property
    def seq_base(self) -> int | None:
        """The sequence number this life began at (None: not a sequenced stream)."""
        value = self.fields.get(SEQ_BASE)  # may be below 0 (see push.lua)
        return int(value) if value is not None and _SEQ_BASE.fullmatch(value) else None

    @property
    def gaps(self) -> int:
        """Sequence numbers the producer skipped (chunks it never delivered)."""
        return as_int(self.fields.get(GAPS))

    @property
    def finished(self) -> bool:
        """Whether the producer marked the stream finished."""
        return FINISHED_AT in self.fields

    @property
    def quarantined(self) -> bool:
        """Whether compaction set the buffer aside after too many failures."""
        return QUARANTINED_AT in self.fields

    @property
    def orphaned(self) -> bool:
        """Whether compaction set the buffer aside because its row does not exist."""
        return ORPHANED_AT in self.fields

    @property
    def has_failures(self) -> bool:
        """Whether a failed compaction was recorded since the last success."""
        return ATTEMPTS in self.fields

    @property
    def state(self) -> BufferState:
        """`quarantined`, `orphaned`, `finished`, or `open` (streaming or idle)."""
        if self.quarantined:
            return BufferState.QUARANTINED
        if self.orphaned:
            return BufferState.ORPHANED
        if self.finished:
            return BufferState.FINISHED
        return BufferState.OPEN

    @property
    def last_chunk_at(self) -> datetime | None:
        """When the producer pushed last, where it records it."""
        return parse_time(self.fields.get(LAST_CHUNK_AT))

    @property
    def observation(self) -> Observation | None:
        """A compactor's last look at the buffer (observe.lua), if any."""
        return Observation.from_fields(self.fields)


@dataclass(frozen=True)
class Observation:
    """What a compactor last recorded of a buffer: its end, since when, and whether
    that was the first time genbuf saw it (no change seen) or a change it saw."""

    end: int
    at: datetime
    first: bool

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Observation | None:
        """The observation stored in a state hash; None when there is none."""
        at = parse_time(fields.get(SEEN_AT))
        if at is None or SEEN_END not in fields:
            return None
        return cls(as_int(fields.get(SEEN_END), -1), at, fields.get(SEEN_FIRST) == "1")

    def looking_now(self, end: int, now: datetime) -> Observation:
        """This observation as it stands after a look at ``end`` chunks now: the same
        when nothing moved, else a change seen now."""
        return self if end == self.end else Observation(end, now, first=False)


class IsoClock:
    """Now as ISO 8601 UTC with microseconds, e.g. 2026-11-25T21:15:53.028616Z.

    One strftime a second: a producer stamps every chunk. The cached second and
    its text are one tuple, replaced whole, so threads sharing a clock never pair
    one second's text with another's.
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def now(self) -> str:
        """The current time, formatted."""
        second, fraction = divmod(time.time_ns(), 1_000_000_000)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{fraction // 1000:06d}Z"
