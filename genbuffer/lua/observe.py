"""observe.lua: record a compactor's look at a buffer, for the idle rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer.lua import ScriptCall, text

__all__ = ["ObserveArgs", "ObserveReply"]


@dataclass(frozen=True)
class ObserveReply:
    """What the state hash records: when genbuf first saw this many chunks (text, as
    stored), whether that was its first look, and how many (trimmed + length)."""

    seen_at: str
    first: bool
    seen_end: int


@dataclass(frozen=True, slots=True)
class ObserveArgs(ScriptCall[ObserveReply | None]):
    """The arguments of observe.lua."""

    SCRIPT = "observe"
    KEYS = ("chunks_key", "state_key")
    ARGV = ("now", "ttl")

    chunks_key: str
    state_key: str  # the meta hash, or genbuf's {K}:genbuf beside a split list
    now: str  # ISO 8601 UTC
    ttl: int  # seconds, for a state hash this creates when the list has none

    def parse(self, reply: Any) -> ObserveReply | None:
        """{seen_at, seen_first, seen_end}, or None (false: the list does not exist)."""
        if not isinstance(reply, list) or len(reply) != 3:
            return None
        return ObserveReply(text(reply[0]), text(reply[1]) == "1", int(reply[2]))
