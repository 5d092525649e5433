"""release_meta.lua: take a deleted life's chunks off the app's meta hash (split lists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbuffer import keys
from genbuffer.lua import ScriptCall

__all__ = ["REMEMBER_AFTER_DROP", "ReleaseMetaArgs"]

REMEMBER_MARGIN = 60  # seconds past the `ended` hash's TTL (the release comes after it)
# an `ended` hash without a TTL (nothing gives none; by hand): a day, as the default TTL
REMEMBER_UNBOUNDED = 86400
# once genbuf's hash is dropped, nothing asks for the release any more but a process that
# read the `ended` mark just before: the mark is kept this much longer, not a day (a
# deleted buffer's mark a day long is ~184 bytes a generation, held under noeviction)
REMEMBER_AFTER_DROP = 600


@dataclass(frozen=True, slots=True)
class ReleaseMetaArgs(ScriptCall[bool]):
    """The arguments of release_meta.lua; its reply: whether the meta hash was deleted."""

    SCRIPT = "release_meta"
    KEYS = ("meta_key", "released_key")
    ARGV = ("life", "stream_id", "remember")

    meta_key: str
    released_key: str  # keys.released_key(meta_key)
    life: int  # chunks of the deleted life (ack.lua's fourth reply)
    stream_id: str  # the deleted life's
    remember: int  # seconds the release of a deleted hash is remembered

    @classmethod
    def of(cls, chunks: str, life: int, stream_id: str, ended_ttl: int) -> ReleaseMetaArgs:
        """The release of the list ``chunks``'s deleted life, remembered for longer than
        genbuf's hash marked `ended` lives on (``ended_ttl``: its TTL; -1: none)."""
        meta = keys.meta_key(chunks)
        remember = ended_ttl + REMEMBER_MARGIN if ended_ttl > 0 else REMEMBER_UNBOUNDED
        return cls(meta, keys.released_key(meta), life, stream_id, remember)

    def parse(self, reply: Any) -> bool:
        """1 if the meta hash was deleted."""
        return bool(int(reply))
