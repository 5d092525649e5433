"""push_meta.lua: the meta hash side of a push to a split list (after push_list.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["ListCreated", "PushMetaArgs"]


class ListCreated(StrEnum):
    """ARGV[8]: whether the list side of the push created the list."""

    CREATED = "1"
    EXISTED = "0"


@dataclass(frozen=True, slots=True)
class PushMetaArgs(ScriptCall[int]):
    """The arguments of push_meta.lua; its reply: chunk_count."""

    SCRIPT = "push_meta"
    KEYS = ("meta_key",)
    ARGV = (
        "ttl",
        "now",
        "organization_id",
        "scenario_id",
        "generation_id",
        "appended",
        "total_bytes",
        "list_created",
    )

    meta_key: str
    ttl: int
    now: str  # ISO 8601 UTC
    organization_id: int
    scenario_id: int | None
    generation_id: int
    appended: int  # chunks the list side appended
    total_bytes: int  # their length in bytes
    list_created: ListCreated

    def parse(self, reply: Any) -> int:
        """chunk_count after the push."""
        return int(reply)
