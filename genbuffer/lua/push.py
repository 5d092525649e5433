"""push.lua: the one push script (a list and its meta hash; or, on a split list, each side)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from genbuffer.lua import ScriptCall

__all__ = ["PushArgs", "PushHead", "PushReply", "Step"]


class Step(StrEnum):
    """ARGV[1]: what the call writes."""

    PUSH = "push"  # the list and its meta hash, in one slot
    RPUSHED = "rpushed"  # … the chunks RPUSHed just before, in the same MULTI/EXEC
    LIST = "list"  # a split list: the list (and genbuf's own hash beside it) …
    COUNT = "count"  # … then, in the meta hash's slot, the count
    FINISH = "finish"  # the stream marked finished (no chunk)


class PushReply(NamedTuple):
    """The list length after the push, chunks appended and chunks skipped."""

    length: int
    appended: int
    skipped: int


class PushHead(NamedTuple):
    """What every call of one push carries: the TTL, the time and the ids (a tuple:
    built once per token)."""

    ttl: int
    now: str  # ISO 8601 UTC
    organization_id: int
    scenario_id: int | None
    generation_id: int


@dataclass(frozen=True, slots=True)
class PushArgs(ScriptCall[PushReply]):
    """The arguments of push.lua; build them with ``push``, ``list_side``, ``count_side``."""

    SCRIPT = "push"
    KEYS = ("chunks_key", "hash_key")
    ARGV = (
        "step",
        "ttl",
        "now",
        "organization_id",
        "scenario_id",
        "generation_id",
        "seq",
        "total_bytes",
        "appended",
        "list_length",
    )
    TAIL = "chunks"

    chunks_key: str
    hash_key: str
    step: Step
    ttl: int
    now: str  # ISO 8601 UTC
    organization_id: int
    scenario_id: int | None
    generation_id: int
    seq: int | None  # of the first chunk (0-based, over the stream); None: unsequenced
    total_bytes: int  # of the chunks, computed by the caller
    appended: int | None  # Step.COUNT, Step.RPUSHED: chunks appended before
    list_length: int | None  # Step.COUNT, Step.FINISH: the list's length, read apart
    chunks: tuple[bytes | str, ...]

    @classmethod
    def push(
        cls,
        chunks_key: str,
        meta_key: str,
        head: PushHead,
        chunks: tuple[bytes | str, ...],
        total_bytes: int,
        *,
        seq: int | None = None,
    ) -> PushArgs:
        """A list and its meta hash in one slot: append and count in one call."""
        return cls(chunks_key, meta_key, _PUSH, *head, seq, total_bytes, None, None, chunks)

    @classmethod
    def rpushed(
        cls, chunks_key: str, meta_key: str, head: PushHead, appended: int, total_bytes: int
    ) -> PushArgs:
        """A list and its meta hash in one slot, ``appended`` chunks (``total_bytes`` of
        them) RPUSHed just before in the same MULTI/EXEC: count them, the TTLs."""
        return cls(
            chunks_key,
            meta_key,
            Step.RPUSHED,
            *head,
            None,
            total_bytes,
            appended,
            None,
            (),
        )

    @classmethod
    def list_side(
        cls,
        chunks_key: str,
        state_key: str,
        head: PushHead,
        chunks: tuple[bytes | str, ...],
        total_bytes: int,
    ) -> PushArgs:
        """A split list: append (a new list's stream id in genbuf's hash ``state_key``)."""
        return cls(chunks_key, state_key, Step.LIST, *head, None, total_bytes, None, None, chunks)

    @classmethod
    def count_side(
        cls, meta_key: str, head: PushHead, appended: int, total_bytes: int, list_length: int
    ) -> PushArgs:
        """A split list's meta hash, after ``list_side`` appended ``appended`` chunks
        (``total_bytes`` of them) and left the list ``list_length`` long."""
        return cls(
            meta_key,
            meta_key,
            Step.COUNT,
            *head,
            None,
            total_bytes,
            appended,
            list_length,
            (),
        )

    @classmethod
    def finish(
        cls, chunks_key: str, meta_key: str, head: PushHead, list_length: int | None = None
    ) -> PushArgs:
        """Mark the stream finished in ``meta_key`` if the list or it exists; a split
        list passes its meta hash as ``chunks_key`` and the list's length read apart."""
        return cls(chunks_key, meta_key, Step.FINISH, *head, None, 0, None, list_length, ())

    def parse(self, reply: Any) -> PushReply:
        """{list length, appended, skipped}."""
        return PushReply._make(map(int, reply))


_PUSH = Step.PUSH  # (an enum member looked up once: push_chunk builds a call per token)
