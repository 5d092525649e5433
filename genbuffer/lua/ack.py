"""ack.lua: acknowledge chunks a committed transaction holds (trim them off the head)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from genbuffer.lua import ScriptCall

__all__ = ["AckArgs", "AckReply", "Layout", "WhenEmpty"]


class WhenEmpty(StrEnum):
    """ARGV[3]: what to do with both keys once no chunk is left."""

    DELETE = "1"
    KEEP = "0"


class Layout(StrEnum):
    """ARGV[4]: whether the list is split from its meta hash on a cluster (genbuf's
    hash is then kept, marked ``ended``, until the meta hash gives the life up)."""

    SPLIT = "1"
    ONE_SLOT = "0"


@dataclass(frozen=True)
class AckReply:
    """Chunks trimmed, whether the keys were deleted, chunks left, chunks of the
    stream trimmed in all (what the app's meta hash counted of a deleted life), and, for
    a split list deleted, how long genbuf's hash marked `ended` lives on."""

    trimmed: int
    deleted: bool
    left: int
    life: int
    ended_ttl: int = -2  # a split list's: TTL of genbuf's hash marked `ended`


@dataclass(frozen=True, slots=True)
class AckArgs(ScriptCall[AckReply]):
    """The arguments of ack.lua."""

    SCRIPT = "ack"
    KEYS = ("chunks_key", "state_key")
    ARGV = ("stream_id", "persisted", "when_empty", "layout")

    chunks_key: str
    state_key: str  # the meta hash, or genbuf's {K}:genbuf beside a split list
    stream_id: str  # the stream the committed compaction read
    persisted: int  # absolute count of that stream's chunks now persisted
    when_empty: WhenEmpty
    layout: Layout = Layout.ONE_SLOT

    def parse(self, reply: Any) -> AckReply:
        """{trimmed, deleted 1/0, left, life, TTL of an `ended` hash}."""
        trimmed, deleted, left, life, ended = reply
        return AckReply(int(trimmed), bool(int(deleted)), int(left), int(life), int(ended))
