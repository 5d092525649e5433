"""snapshot.lua: a consistent snapshot of a buffer for compaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from genbuffer.lua import ScriptCall, text

__all__ = [
    "Counter",
    "MetaHash",
    "Mode",
    "SnapshotArgs",
    "SnapshotReply",
    "SnapshotTag",
    "SplitTry",
]


class Mode(StrEnum):
    """ARGV[7]: a read-only snapshot (a dry run) writes nothing at all."""

    READ_ONLY = "1"
    WRITE = "0"


class Counter(StrEnum):
    """ARGV[9] when no counter was read before the script (else the counter, as read)."""

    IN_STATE_HASH = ""  # read it from KEYS[2] (one slot: the meta hash itself)
    NONE = "-"  # the app's meta hash has none


class MetaHash(StrEnum):
    """ARGV[10]: whether the app's meta hash (read before the script) exists."""

    EXISTS = "1"
    ABSENT = "0"


class SplitTry(StrEnum):
    """ARGV[11]: which try of a split list's snapshot this is."""

    NOT_SPLIT = ""
    FIRST = "1"  # may answer VANISHED or UNFINISHED_DELETE, writing nothing
    CONFIRMED = "2"  # a vanishing was confirmed (or a read-only snapshot)


class SnapshotTag(IntEnum):
    """The first element of snapshot.lua's reply."""

    MISSING = 0  # neither list nor hash exists
    TAKEN = 1  # the snapshot
    VANISHED = 2  # (first try) chunks vanished by a counter read before: confirm it
    UNFINISHED_DELETE = 3  # (first try) a deleted life not finished (`ended`)


@dataclass(frozen=True)
class SnapshotReply:
    """snapshot.lua's reply, by its tag. TAKEN: the list's length, genbuf's hash as
    text, the first page of chunks not yet held and its absolute position, chunks
    vanished from the head not counted yet (read-only), and the windows of chunks
    where the row's last ones should be. UNFINISHED_DELETE: the deleted life's
    `trimmed` and stream id, and how long genbuf's hash marked `ended` lives on."""

    tag: SnapshotTag
    length: int = 0
    state: dict[str, str] = field(default_factory=dict)
    page: list[bytes] = field(default_factory=list)
    page_at: int = 0
    vanished: int = 0
    windows: list[list[bytes]] = field(default_factory=list)
    trimmed: int = 0
    stream_id: str = ""
    ended_ttl: int = -2  # TTL of genbuf's hash marked `ended` (-1: none)


@dataclass(frozen=True, slots=True)
class SnapshotArgs(ScriptCall[SnapshotReply]):
    """The arguments of snapshot.lua."""

    SCRIPT = "snapshot"
    KEYS = ("chunks_key", "state_key")
    ARGV = (
        "new_stream_id",
        "lease",
        "ttl",
        "held_stream",
        "held",
        "page",
        "mode",
        "window",
        "counter",
        "meta_hash",
        "split_try",
    )
    TAIL = "shifts"

    chunks_key: str
    state_key: str  # the meta hash, or genbuf's {K}:genbuf beside a split list
    new_stream_id: str  # stored when the hash has no stream id yet
    lease: int  # seconds: a key that would expire sooner is extended to it
    ttl: int  # seconds, for a meta hash that has none
    held_stream: str | None  # the stream id the row records
    held: int  # chunks of that stream the row holds
    page: int  # chunks of the first page not yet held to return
    mode: Mode
    window: int  # how many of the row's last persisted chunks to return
    counter: Counter | str = Counter.IN_STATE_HASH  # else the app's chunk_count, as read
    meta_hash: MetaHash = MetaHash.ABSENT
    split_try: SplitTry = SplitTry.NOT_SPLIT
    shifts: tuple[int, ...] = ()  # another stream: the `trimmed` values to try

    def parse(self, reply: Any) -> SnapshotReply:
        """{0}, {1, length, hash, page, page_at, vanished, windows}, {2} or
        {3, trimmed, stream id, TTL}."""
        tag = SnapshotTag(int(reply[0]))
        if tag == SnapshotTag.UNFINISHED_DELETE:
            return SnapshotReply(
                tag, trimmed=int(reply[1]), stream_id=text(reply[2]), ended_ttl=int(reply[3])
            )
        if tag != SnapshotTag.TAKEN:
            return SnapshotReply(tag)
        flat = [text(item) for item in reply[2]]
        return SnapshotReply(
            tag,
            length=int(reply[1]),
            state=dict(zip(flat[::2], flat[1::2], strict=True)),
            page=list(reply[3]),
            page_at=int(reply[4]),
            vanished=int(reply[5]),
            windows=[list(found) for found in reply[6]],
        )
