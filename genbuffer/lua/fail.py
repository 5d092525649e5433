"""fail.lua: count a failed compaction attempt; set the buffer aside at the limit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["FailArgs", "FailReply", "SetAside"]


class SetAside(StrEnum):
    """ARGV[5]: the meta field that sets the buffer aside at the limit (the names of
    genbuffer.redis.meta's QUARANTINED_AT and ORPHANED_AT)."""

    QUARANTINED = "quarantined_at"
    ORPHANED = "orphaned_at"  # a buffer whose row does not exist (limit 1)


@dataclass(frozen=True)
class FailReply:
    """Attempts so far, and whether the buffer is set aside."""

    attempts: int
    set_aside: bool


@dataclass(frozen=True, slots=True)
class FailArgs(ScriptCall[FailReply]):
    """The arguments of fail.lua."""

    SCRIPT = "fail"
    KEYS = ("state_key", "chunks_key")
    ARGV = ("error", "limit", "now", "ttl", "set_aside")

    state_key: str  # the meta hash (or genbuf's {K}:genbuf beside a split list)
    chunks_key: str
    error: str  # one line
    limit: int  # COMPACTION_MAX_ATTEMPTS
    now: str  # ISO 8601 UTC
    ttl: int  # seconds, for a key that has none
    set_aside: SetAside

    def parse(self, reply: Any) -> FailReply:
        """{attempts, 1 if set aside else 0}."""
        attempts, aside = reply
        return FailReply(int(attempts), bool(int(aside)))
