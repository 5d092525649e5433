"""push_one.lua: the hot path, one unsequenced chunk (once per token)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["PushOneArgs"]


@dataclass(frozen=True, slots=True)
class PushOneArgs(ScriptCall[int]):
    """The arguments of push_one.lua; its reply: the list length."""

    SCRIPT = "push_one"
    KEYS = ("chunks_key", "meta_key")
    ARGV = (
        "chunk",
        "now",
        "chunk_bytes",
        "ttl",
        "organization_id",
        "scenario_id",
        "generation_id",
    )

    chunks_key: str
    meta_key: str
    chunk: bytes | str
    now: str  # ISO 8601 UTC
    chunk_bytes: int  # the chunk's length in bytes
    ttl: int
    organization_id: int
    scenario_id: int | None
    generation_id: int

    def parse(self, reply: Any) -> int:
        """The list length."""
        return int(reply)
