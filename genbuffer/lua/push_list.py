"""push_list.lua: the list side of a push to a split list (genbuffer.redis.split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["PushListArgs"]


@dataclass(frozen=True, slots=True)
class PushListArgs(ScriptCall[int]):
    """The arguments of push_list.lua; its reply: the list length."""

    SCRIPT = "push_list"
    KEYS = ("chunks_key", "state_key")
    ARGV = ("ttl",)
    TAIL = "chunks"

    chunks_key: str
    state_key: str  # genbuf's own hash beside the list, {K}:genbuf
    ttl: int
    chunks: tuple[bytes | str, ...]

    def parse(self, reply: Any) -> int:
        """The list length."""
        return int(reply)
