"""release_meta.lua: take a deleted life's chunks off the app's meta hash (split lists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["ReleaseMetaArgs"]


@dataclass(frozen=True, slots=True)
class ReleaseMetaArgs(ScriptCall[bool]):
    """The arguments of release_meta.lua; its reply: whether the meta hash was deleted."""

    SCRIPT = "release_meta"
    KEYS = ("meta_key",)
    ARGV = ("life", "stream_id")

    meta_key: str
    life: int  # chunks of the deleted life (ack.lua's fourth reply)
    stream_id: str  # the deleted life's

    def parse(self, reply: Any) -> bool:
        """1 if the meta hash was deleted."""
        return bool(int(reply))
