"""drop_state.lua: the last step of deleting a split list's life (genbuffer.redis.layout)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["DropStateArgs"]


@dataclass(frozen=True, slots=True)
class DropStateArgs(ScriptCall[bool]):
    """The arguments of drop_state.lua; its reply: whether genbuf's hash was dropped."""

    SCRIPT = "drop_state"
    KEYS = ("state_key",)
    ARGV = ("stream_id",)

    state_key: str  # genbuf's hash, {K}:genbuf
    stream_id: str  # the deleted life's

    def parse(self, reply: Any) -> bool:
        """1 if the hash was dropped."""
        return bool(int(reply))
