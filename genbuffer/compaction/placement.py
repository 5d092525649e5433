"""Where a buffer stands against what its row holds: a verdict, computed from values.

The row records, in ``metadata.buffer``, which buffer life (``stream_id``) it holds
and up to which position (``offset``), the `trimmed` it read positions with, a
fingerprint of the last chunks it persisted (``tail``), the sequence number after
them (``seq_next``) and the stream ids it held before (``earlier``). The meta hash
can vanish alone (eviction, a hand DEL, a failover) and a replica promoted after a
failover can lag; none of that may make compaction skip or repeat a chunk:

* the row's stream, its last chunks where the row says: continue after them;
* the row's stream, other chunks there, or fewer chunks than the row holds: the
  buffer diverged (a lagging replica) — stop, record ``stream_diverged``, delete
  nothing;
* another stream id, the row's last chunks in the list where the lost meta hash had
  them, and the row compacted without --delete (so genbuf never removed that list):
  the same list, its meta hash gone — continue after them. After a --delete, a list
  holding the same bytes is a new life (a stream may well repeat itself);
* a stream id the row already held and left: an old buffer life come back — stop;
* otherwise a new life: with sequence numbers, continued from ``seq_next`` (retried
  chunks skipped, missing ones counted as gaps); a regeneration when the row's stream
  was closed and the new one starts at 0, or has no sequence numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genbuffer.redis import BufferSnapshot

__all__ = ["TAIL_CHUNKS", "Placement", "RowRecord", "fingerprint", "place"]

TAIL_CHUNKS = 8  # chunks in the fingerprint of what the row holds last
EARLIER_STREAMS = 16  # stream ids a row remembers having held


def fingerprint(chunks: Sequence[bytes | memoryview]) -> str:
    """sha256 over the chunks, each prefixed by its length (so boundaries count)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(len(chunk).to_bytes(8, "big"))
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RowRecord:
    """What the row says of the buffer it was compacted from (``metadata.buffer``)."""

    stream_id: str
    offset: int
    trimmed: int = 0
    tail_count: int = 0
    tail_sha256: str | None = None
    seq_next: int | None = None
    closed: bool = False  # the producer marked the stream finished: it is whole
    # compacted before it was marked finished: why (idle, at_risk; open: asked for by
    # id). Chunks arriving later continue or replace it by content (validate.LateChunks)
    provisional: str | None = None
    kept: bool = False  # compacted without --delete: genbuf trimmed and deleted nothing
    earlier: tuple[str, ...] = ()

    @classmethod
    def from_metadata(cls, metadata: Any) -> RowRecord | None:
        """Parse ``metadata.buffer``; None if genbuf never wrote one."""
        record = metadata.get("buffer") if isinstance(metadata, dict) else None
        if not isinstance(record, dict):
            return None
        stream, offset = record.get("stream_id"), record.get("offset")
        if not isinstance(stream, str) or not isinstance(offset, int) or isinstance(offset, bool):
            return None
        found_tail, found_earlier = record.get("tail"), record.get("earlier")
        tail: dict[str, Any] = found_tail if isinstance(found_tail, dict) else {}
        earlier: list[Any] = found_earlier if isinstance(found_earlier, list) else []
        return cls(
            stream_id=stream,
            offset=offset,
            trimmed=record["trimmed"] if _is_int(record.get("trimmed")) else 0,
            tail_count=tail["count"] if _is_int(tail.get("count")) else 0,
            tail_sha256=tail.get("sha256") if isinstance(tail.get("sha256"), str) else None,
            seq_next=record["seq_next"] if _is_int(record.get("seq_next")) else None,
            closed=record.get("closed") is True,
            provisional=found if isinstance(found := record.get("provisional"), str) else None,
            kept=record.get("kept") is True,
            earlier=tuple(s for s in earlier if isinstance(s, str)),
        )

    def shifts(self) -> tuple[int, ...]:
        """`trimmed` values a lost meta hash may have had with the row's last chunks
        still in the list: the one the row read with, and 0."""
        return tuple(dict.fromkeys((self.trimmed, 0)))

    def holds_tail(self, window: list[bytes]) -> bool | None:
        """Whether ``window`` is the row's last chunks; None when it cannot be told."""
        if not self.tail_count or self.tail_sha256 is None or len(window) != self.tail_count:
            return None
        return fingerprint(window) == self.tail_sha256

    def to_metadata(self) -> dict[str, Any]:
        """The ``metadata.buffer`` object."""
        return {
            "stream_id": self.stream_id,
            "offset": self.offset,
            "trimmed": self.trimmed,
            "closed": self.closed,
            "provisional": self.provisional,
            "kept": self.kept,
            "tail": {"count": self.tail_count, "sha256": self.tail_sha256},
            "seq_next": self.seq_next,
            "earlier": list(self.earlier[-EARLIER_STREAMS:]),
        }


@dataclass(frozen=True)
class Placement:
    """The verdict: chunks before ``done`` are held; whether the buffer continues the
    row's stream; sequence numbers never delivered; or why compaction must stop."""

    done: int
    continues: bool
    gaps: int = 0
    verdict: str | None = None  # "stream_diverged": stop, record, delete nothing
    note: str | None = None


def place(record: RowRecord | None, snapshot: BufferSnapshot, *, closed: bool) -> Placement:
    """Where ``snapshot`` stands against ``record`` (``closed``: the row's stream is whole)."""
    if record is None:
        # a base below 0: the list held chunks from before the producer's sequence 0 (its
        # meta hash lost meanwhile); they are extra chunks (counted as such), never a gap
        return Placement(done=0, continues=True, gaps=max(snapshot.seq_base or 0, 0))
    if record.stream_id == snapshot.stream_id:
        return _same_stream(record, snapshot)
    resumed = _resume_by_content(record, snapshot)
    if resumed is not None:
        return resumed
    if snapshot.stream_id is not None and snapshot.stream_id in record.earlier:
        return Placement(
            done=0,
            continues=False,
            verdict="stream_diverged",
            note="an earlier life of the buffer came back (a failover to a lagging replica?)",
        )
    return _new_life(record, snapshot, closed=closed)


def _same_stream(record: RowRecord, snapshot: BufferSnapshot) -> Placement:
    """The row's own buffer life: continue after what it holds, unless the buffer no
    longer holds that (fewer chunks, or others where the row's last ones were)."""
    if snapshot.end < record.offset and snapshot.length > 0:
        return Placement(
            done=record.offset,
            continues=True,
            verdict="stream_diverged",
            note=f"the buffer ends at chunk {snapshot.end}, before the {record.offset} "
            "the row holds (a replica promoted before it had them all?)",
        )
    window = snapshot.windows[0] if snapshot.windows else []
    if record.holds_tail(window) is False:
        return Placement(
            done=record.offset,
            continues=True,
            verdict="stream_diverged",
            note="the buffer no longer holds the chunks the row ends with",
        )
    return Placement(done=record.offset, continues=True)


def _resume_by_content(record: RowRecord, snapshot: BufferSnapshot) -> Placement | None:
    """The row's own list, its meta hash gone: found where the lost one had it.

    Only a list that outlived its meta hash qualifies: one holding chunks its meta
    hash never counted (or a meta hash that counts nothing). A new stream whose
    producer counted every chunk is a new life, however alike its first chunks.
    """
    if snapshot.counted is not None and snapshot.counted >= snapshot.end:
        return None
    for shift, window in zip(record.shifts(), snapshot.windows, strict=False):
        if record.kept and record.holds_tail(window):
            index = record.offset - shift  # list index of the first chunk the row lacks
            return Placement(
                done=snapshot.trimmed + index,
                continues=True,
                note="its meta hash was lost: the list was matched to the row by content",
            )
    return None


def _new_life(record: RowRecord, snapshot: BufferSnapshot, *, closed: bool) -> Placement:
    """A buffer life after the row's: continued by sequence number, or a regeneration."""
    base, expected = snapshot.seq_base, record.seq_next
    if base is None or expected is None or (closed and base == 0):
        return Placement(done=0, continues=False)
    if base <= expected:  # its first chunks are retries of chunks the row holds
        held = min(expected - base, snapshot.end)
        return Placement(done=max(held, 0), continues=True)
    return Placement(done=0, continues=True, gaps=base - expected)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
