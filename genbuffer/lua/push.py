"""push.lua: append chunks to a buffer and update its meta hash (sequenced or not)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["PushArgs", "PushReply"]


@dataclass(frozen=True)
class PushReply:
    """The list length after the push, chunks appended and chunks skipped."""

    length: int
    appended: int
    skipped: int


@dataclass(frozen=True, slots=True)
class PushArgs(ScriptCall[PushReply]):
    """The arguments of push.lua."""

    SCRIPT = "push"
    KEYS = ("chunks_key", "meta_key")
    ARGV = (
        "ttl",
        "now",
        "organization_id",
        "scenario_id",
        "generation_id",
        "seq",
        "total_bytes",
    )
    TAIL = "chunks"

    chunks_key: str
    meta_key: str
    ttl: int
    now: str  # ISO 8601 UTC
    organization_id: int
    scenario_id: int | None
    generation_id: int
    seq: int | None  # of the first chunk (0-based, over the stream); None: unsequenced
    total_bytes: int  # of the chunks, computed by the caller
    chunks: tuple[bytes | str, ...]

    def parse(self, reply: Any) -> PushReply:
        """{list length, appended, skipped}."""
        length, appended, skipped = reply
        return PushReply(int(length), int(appended), int(skipped))
