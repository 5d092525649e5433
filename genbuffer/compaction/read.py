"""1. Read: which buffer, and one consistent snapshot of it, taken with the row locked.

The key is the one an engine found, or else looked up (the row's scenario key and
the key without one: both present is an error naming both). The snapshot
(snapshot.lua) reads length and meta atomically, with the first page of chunks the
row lacks and the row's last persisted chunks to compare; a leasing snapshot also
gives this life of the buffer its stream id and extends a TTL about to run out,
while a peek (a dry run) writes nothing at all. A buffer that is not there is told
apart here: the row already holds it, its chunks are lost, or there is nothing to
compact (after looking for buffers under another prefix).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from genbuffer import keys
from genbuffer.compaction.placement import RowRecord
from genbuffer.compaction.scan import STREAM_FIRST_PAGE
from genbuffer.errors import AmbiguousBuffer, NothingToCompact, Quarantined
from genbuffer.objects.artifact import OffloadRecord
from genbuffer.prefixes import check_prefix
from genbuffer.redis.protocol import READ_PAGE

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.db.rows import GenerationRow
    from genbuffer.redis import BufferSnapshot, GenerationBuffer
    from genbuffer.redis.layout import MetaRead

__all__ = ["Absence", "Source", "older_than", "read", "snapshot_for"]


class Absence(StrEnum):
    """Why there is no buffer to read, when that is no error."""

    HELD = "held"  # the row holds an artifact genbuf wrote: compacted (and deleted) before
    LOST = "lost"  # no artifact, and the row is older than the chunk TTL: its chunks are gone


@dataclass(frozen=True)
class Source:
    """What the read found: the locked row, what it records of its buffer, the snapshot."""

    row: GenerationRow
    record: RowRecord | None  # the row's metadata.buffer (None: never compacted by genbuf)
    snapshot: BufferSnapshot
    scenario_id: int | None  # of the key read
    note: str | None  # which key, when it was not the obvious one
    chunk_ttl: int  # the buffer's TTL in seconds (said when its chunks are lost)
    absence: Absence | None = None  # set when the snapshot found no buffer

    @property
    def key(self) -> str:
        """The chunks key read."""
        return self.snapshot.key


@dataclass(frozen=True)
class _Located:
    key: str
    scenario_id: int | None
    note: str | None = None


def read(
    request: CompactionRequest,
    row: GenerationRow,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    lease: bool,
    now: datetime,
    known: Mapping[str, MetaRead] | None = None,
) -> Source:
    """Snapshot the buffer of a locked row (``lease`` False: a peek that writes nothing;
    ``known``: meta hashes a batch read before, ``CompactionProtocol.read_metas``).

    Raises NothingToCompact (no buffer, nothing held, nothing lost), WrongPrefix
    (buffers under another prefix), Quarantined (set aside, without --force)."""
    located = _locate(request, row, buffer)
    record = RowRecord.from_metadata(row.metadata)
    page = _first_page(row, config)
    meta = None if known is None else known.get(located.key)
    snapshot = snapshot_for(buffer, located.key, record, lease=lease, page=page, known=meta)
    source = Source(row, record, snapshot, located.scenario_id, located.note, buffer.ttl)
    if not snapshot.exists:
        return _absent(source, buffer, now)
    if snapshot.quarantined and not request.options.force:
        raise Quarantined(
            f"generation {request.generation_id} is quarantined after "
            f"{snapshot.meta.get('attempts', '?')} failed attempts: "
            f"{snapshot.meta.get('last_error', 'unknown error')}",
            hint="fix the cause, then run compact-generation with --force",
        )
    config.faults.at("after_snapshot")
    return source


def _first_page(row: GenerationRow, config: CompactionConfig) -> int:
    """Chunks the snapshot brings along: an artifact that may be offloaded is streamed,
    a small first page rather than 8 MiB held through the whole compaction."""
    offloading = config.offload.active
    if offloading or OffloadRecord.of_row(row.compacted, row.metadata) is not None:
        return STREAM_FIRST_PAGE
    return READ_PAGE


def snapshot_for(
    buffer: GenerationBuffer,
    key: str,
    record: RowRecord | None,
    *,
    lease: bool,
    page: int,
    known: MetaRead | None = None,
) -> BufferSnapshot:
    """A snapshot of ``key`` carrying what placement needs to judge it against ``record``:
    the first page after what the row holds, and the windows where its last chunks are."""
    return buffer.protocol.snapshot(
        key,
        held=None if record is None else (record.stream_id, record.offset),
        page=page,
        read_only=not lease,
        window=0 if record is None else record.tail_count,
        shifts=record.shifts() if record is not None and record.kept else (),
        known=known,
    )


def _absent(source: Source, buffer: GenerationBuffer, now: datetime) -> Source:
    """No buffer: held by the row, lost, or nothing to compact (NothingToCompact)."""
    row = source.row
    if row.compacted is not None and source.record is not None:
        return replace(source, absence=Absence.HELD)
    check_prefix(buffer)  # buffers under another prefix: the error names it
    if row.compacted is None and older_than(row.created_at, buffer.ttl, now):
        return replace(source, absence=Absence.LOST)
    raise NothingToCompact(
        f"nothing to compact: no Redis buffer at {source.key}",
        hint="check the ids, --scenario-id and REDIS_PREFIX (genbuf config show)",
    )


def older_than(created_at: datetime | None, seconds: int, now: datetime) -> bool:
    """Whether a row was created more than ``seconds`` ago (unknown: no)."""
    if created_at is None:
        return False
    stamp = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return (now - stamp).total_seconds() > seconds


def _locate(request: CompactionRequest, row: GenerationRow, buffer: GenerationBuffer) -> _Located:
    """The chunks key to compact, its scenario, and a note when it was not the obvious one.

    A producer that does not know the scenario at push time writes the key without
    it, while the row has one: both are tried. Both present is an error naming both.
    """
    org, gen, scenario_id = request.organization_id, request.generation_id, request.scenario_id
    found = request.found
    if found is not None and found.key is not None:
        return _Located(found.key, scenario_id)
    if found is not None or scenario_id is not None:
        note = None
        if scenario_id is not None and row.scenario_id not in (None, scenario_id):
            note = f"the buffer of scenario {scenario_id}, where the row's is {row.scenario_id}"
        return _Located(buffer.read_key_for(org, gen, scenario_id), scenario_id, note)
    if row.scenario_id is None:
        return _Located(buffer.read_key_for(org, gen, None), None)
    with_scenario = buffer.read_key_for(org, gen, row.scenario_id)
    without = buffer.read_key_for(org, gen, None)
    present = set(
        buffer.keyspace.existing_keys(
            [with_scenario, keys.meta_key(with_scenario), without, keys.meta_key(without)]
        )
    )
    has_with = bool({with_scenario, keys.meta_key(with_scenario)} & present)
    has_without = bool({without, keys.meta_key(without)} & present)
    if has_with and has_without:
        raise AmbiguousBuffer(
            f"generation {gen} has two buffers: {with_scenario} and {without}",
            hint="compact each with --scenario-id (the key without one: see inspect-generation)",
        )
    if has_without:
        note = f"buffer found under the key without scenario {row.scenario_id}"
        return _Located(without, None, note)
    return _Located(with_scenario, row.scenario_id)
