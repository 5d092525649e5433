"""3. Plan: what one compaction does, as a value, decided while the row is locked.

A ``Plan`` says what was read (the stream, up to which position), what the row
will hold (``Write``: the new record of the buffer, backups, llm_response; or
``adopt``: a new buffer life the row already holds whole), what --delete may trim
once the commit holds it (``trim``), what the completion stream is told, and why
the compaction stops when it does (``stop``, typed by its cause). Nothing here
writes: ``apply`` does, and a dry run is a plan that is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from genbuffer.compaction.placement import TAIL_CHUNKS, RowRecord, fingerprint
from genbuffer.compaction.read import Absence
from genbuffer.compaction.validator import Issue, Validation
from genbuffer.errors import NothingToCompact
from genbuffer.states import (
    BufferState,
    LateOutcome,
    LateRule,
    LedgerResult,
    StopCause,
    ValidationMode,
)

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.placement import Placement
    from genbuffer.compaction.read import Source
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.compaction.validate import Checked, Reading
    from genbuffer.objects.offload import OffloadPlan
    from genbuffer.redis import BufferSnapshot

__all__ = [
    "LOSS_CODES",
    "Content",
    "LlmResponse",
    "Plan",
    "Planned",
    "Stop",
    "Trim",
    "Write",
    "absent",
    "decide",
]

LOSS_CODES = frozenset({"chunk_count_mismatch", "sequence_gap", "buffer_missing"})


class LlmResponse(StrEnum):
    """What the write does to `llm_response`."""

    PARSE = "json"  # the artifact's JSON document
    KEEP = "keep"  # leave the document the row holds (a concatenation that does not parse)
    NULL = "null"


@dataclass(frozen=True)
class Write:
    """What the row will hold after this compaction, besides the artifact's bytes."""

    record: RowRecord  # metadata.buffer: the stream and how far the row holds it
    llm_response: LlmResponse
    backup_from: int  # where the new chunks start in the artifact's bytes …
    sizes: tuple[int, ...]  # … and their sizes, for the chunk backups
    keep_history: bool  # a new stream meets the artifact: keep the old one first
    offload: OffloadPlan | None = None  # set: the artifact goes to the object store


@dataclass(frozen=True)
class Stop:
    """Why a compaction stops without writing: nothing is written, the run exits 1."""

    cause: StopCause
    reason: str  # the message, as the CLI, the ledger and the attempt count say it


@dataclass(frozen=True)
class Trim:
    """What --delete trims once the commit holds it: ``key``'s stream below ``end``."""

    key: str
    stream: str
    end: int


@dataclass(frozen=True)
class Plan:
    """What a compaction does, before anything is written or acknowledged."""

    key: str
    scenario_id: int | None
    stream: str | None  # the buffer life read (None: there was no buffer)
    end: int  # absolute position the row holds the stream to: what --delete trims below
    chunk_count: int
    size: int
    new_chunks: int = 0
    validation: Validation = field(default_factory=Validation)
    sha256: str | None = None
    stop: Stop | None = None  # set: nothing is written, the run exits 1
    note: str | None = None  # said in the message (which key, already compacted, …)
    regenerated: LateOutcome | None = None  # a new stream met the artifact the row held
    late_rule: LateRule | None = None  # why it was appended or replaced
    had_failures: bool = False  # failed attempts were recorded before this one
    write: Write | None = None  # None: the artifact stays as it is
    adopt: RowRecord | None = None  # a new buffer life the row already holds whole
    last_chunk_at: datetime | None = None  # when the producer pushed last (the ledger's lag)
    trim: Trim | None = None  # set: --delete trims this once the commit holds it

    @property
    def lost_chunks(self) -> bool:
        """Whether validation found chunks missing from the buffer."""
        return any(
            issue.code in LOSS_CODES and issue.severity == "error"
            for issue in self.validation.issues
        )

    @property
    def persists(self) -> bool:
        """Whether applying the plan writes an artifact."""
        return self.write is not None and self.stop is None

    @property
    def announcement(self) -> LedgerResult | None:
        """What the completion stream is told once the plan is applied: a committed
        artifact, a strict abort, or a row that already held the whole buffer about to
        be trimmed (the run that committed it may have died before announcing)."""
        if self.persists:
            return LedgerResult.PERSISTED
        if self.stop is not None:
            return LedgerResult.STRICT_ABORT if self.stop.cause is StopCause.STRICT else None
        if self.trim is not None and self.write is None and not self.lost_chunks:
            return LedgerResult.PERSISTED
        return None

    @property
    def counts_as_attempt(self) -> bool:
        """Whether the stop counts towards quarantine (a loss does not: it is reported on
        every run until someone looks)."""
        return self.stop is not None and not self.lost_chunks and bool(self.stream)

    def noted(self, note: str | None) -> Plan:
        """The same plan with ``note`` said before its own."""
        return replace(self, note="; ".join(part for part in (note, self.note) if part) or None)


class Content:
    """The assembled bytes, handed from the plan to the write exactly once, so that
    the write can drop them once encoded (a 64 MB artifact must not be held twice)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes = b"") -> None:
        self._data = data

    def take(self) -> bytes:
        """The bytes; the holder keeps none."""
        data, self._data = self._data, b""
        return data


class Planned(NamedTuple):
    """A plan, and the bytes it writes (none for a plan that writes no artifact)."""

    plan: Plan
    content: Content


def absent(source: Source) -> Plan:
    """The plan when there was no buffer: the row already holds it all (a re-run
    changes nothing), or its chunks were lost before any compaction."""
    if source.absence is Absence.HELD:
        row = source.row
        return Plan(
            key=source.key,
            scenario_id=source.scenario_id,
            stream=None,
            end=0 if source.record is None else source.record.offset,
            chunk_count=row.chunk_count or 0,
            size=int(row.metadata.get("bytes", 0)),
            sha256=row.metadata.get("sha256"),
            note="no buffer left in Redis",
        )
    issue = Issue(
        "buffer_missing",
        f"no artifact and no buffer at {source.key}, and the row is older than the chunk "
        f"TTL ({source.chunk_ttl} s): its chunks expired or were evicted before any compaction",
    )
    reason = "lost: the buffer is gone and nothing was ever compacted (see issues)"
    return _stopped(source.key, source.scenario_id, issue, Stop(StopCause.LOST, reason))


def decide(
    source: Source,
    checked: Checked,
    request: CompactionRequest,
    config: CompactionConfig,
    *,
    mode: ValidationMode,
) -> Planned:
    """What this compaction does, from what was read (``source``) and validated
    (``checked``); the bytes to write beside it."""
    reading = checked.reading
    if reading is None:
        return Planned(_diverged(source, checked.placement).noted(source.note), Content())
    counted = _counted(source, checked, reading)
    if reading.over or (not reading.offloaded and reading.scanned.size > config.max_bytes):
        reason = f"aborted: over GENERATION_MAX_BYTES ({config.max_bytes} bytes)"
        stopped = replace(counted, validation=reading.validation)
        return Planned(_stop(stopped, StopCause.OVERSIZE, reason).noted(source.note), Content())
    validated = replace(
        counted,
        # the parsed document (heavier than its text) is not kept past validation
        validation=replace(reading.validation, llm_response=None),
        sha256=reading.scanned.sha256,
    )
    if not reading.scanned.new_count:
        nothing_new = _nothing_new(validated, source, checked, request)
        return Planned(nothing_new.noted(source.note), Content())
    if checked.late is not None:
        late = checked.late
        validated = replace(validated, regenerated=late.outcome, late_rule=late.rule)
    if mode is ValidationMode.STRICT and validated.validation.has_errors:
        reason = (
            "dry run: strict validation: nothing would be persisted"
            if request.options.dry_run
            else "strict validation failed: nothing persisted"
        )
        return Planned(_stop(validated, StopCause.STRICT, reason).noted(source.note), Content())
    write, content = _write(source, checked, reading, request, config)
    planned = replace(validated, write=write, trim=_trim(validated, request))
    return Planned(planned.noted(source.note), Content(content or b""))


def _counted(source: Source, checked: Checked, reading: Reading) -> Plan:
    """The plan's facts: the stream read, up to where, what the artifact will count."""
    snapshot, scanned, late = source.snapshot, reading.scanned, checked.late
    kept_count = 0 if late and late.replaces else (source.row.chunk_count or 0)
    return Plan(
        key=source.key,
        scenario_id=source.scenario_id,
        stream=snapshot.stream_id,
        end=snapshot.end,
        chunk_count=kept_count + scanned.new_count,
        size=scanned.size,
        new_chunks=scanned.new_count,
        had_failures=snapshot.fields.has_failures,
        last_chunk_at=snapshot.fields.last_chunk_at,
        note=checked.placement.note,
    )


def _trim(planned: Plan, request: CompactionRequest) -> Trim | None:
    """What --delete may trim: the stream read, below where the row will hold it."""
    if not request.options.delete or planned.stop is not None or planned.stream is None:
        return None
    return Trim(planned.key, planned.stream, planned.end)


def _stop(planned: Plan, cause: StopCause, reason: str) -> Plan:
    return replace(planned, stop=Stop(cause, reason))


def _nothing_new(
    planned: Plan, source: Source, checked: Checked, request: CompactionRequest
) -> Plan:
    """No chunk to add: chunks lost before compaction, up to date (maybe a new buffer
    life to adopt), or nothing at all (NothingToCompact)."""
    record, snapshot, done = source.record, source.snapshot, checked.placement.done
    if planned.lost_chunks:
        # recorded (issue row, audit line) and exit 1 on every run until someone looks
        lost = tuple(i for i in planned.validation.issues if i.code in LOSS_CODES)
        reason = "nothing new to compact, and chunks were lost (see issues)"
        return _stop(replace(planned, validation=Validation(lost)), StopCause.LOST, reason)
    if record is not None and record.stream_id != snapshot.stream_id:
        kept = not request.options.delete
        planned = replace(planned, adopt=_adopted(record, snapshot, done, kept))
    if bool(checked.held) or done > 0:
        # up to date: nothing to write, maybe something to acknowledge
        return replace(planned, trim=_trim(planned, request))
    raise NothingToCompact(f"nothing to compact: the buffer at {source.key} holds no chunks")


def _write(
    source: Source,
    checked: Checked,
    reading: Reading,
    request: CompactionRequest,
    config: CompactionConfig,
) -> tuple[Write, bytes | None]:
    """What the row will hold, and the bytes to write there (None: they go to the
    object store, streamed again by the upload, none held till then)."""
    late, scanned, validation = checked.late, reading.scanned, reading.validation
    # llm_response is written from the bytes themselves. A document the row holds is
    # never wiped by a concatenation that does not parse.
    as_json = validation.is_json and validation.llm_response is not None
    keep_document = source.row.llm_response is not None and not (late and late.replaces)
    content = scanned.content
    offload = None
    if reading.offloaded:
        assert checked.pages is not None  # read: the buffer did not diverge
        offload = config.offload.plan(
            request.organization_id,
            request.generation_id,
            existing=reading.held,  # b"" when replacing
            pages=checked.pages,
            sha256=scanned.sha256,
            size=scanned.size,
            is_json=validation.is_json,
            is_utf8=scanned.utf8_error is None,
            json_text=content.decode("utf-8") if as_json and content is not None else None,
        )
        content = None
    found = request.found
    write = Write(
        record=_written_record(
            source.record,
            source.snapshot,
            scanned.tail,
            selected=None if found is None else found.selected,
            kept=not request.options.delete,
        ),
        llm_response=LlmResponse.PARSE
        if as_json
        else LlmResponse.KEEP
        if keep_document
        else LlmResponse.NULL,
        backup_from=reading.held_size,  # 0 when replacing
        sizes=scanned.sizes,
        keep_history=late is not None,
        offload=offload,
    )
    return write, content


def _diverged(source: Source, placement: Placement) -> Plan:
    """Stop: the buffer does not hold what the row says it persisted last."""
    key = source.key
    issue = Issue(
        "stream_diverged",
        f"the buffer at {key} diverged from the row: {placement.note}; nothing was "
        "persisted or deleted (after a failover, compare the buffer with the row)",
    )
    reason = "stopped: the buffer diverged from what the row holds (see issues)"
    return _stopped(
        key,
        source.scenario_id,
        issue,
        Stop(StopCause.DIVERGED, reason),
        stream=source.snapshot.stream_id,
        end=source.snapshot.end,
    )


def _stopped(
    key: str,
    scenario_id: int | None,
    issue: Issue,
    stop: Stop,
    *,
    stream: str | None = None,
    end: int = 0,
) -> Plan:
    """A compaction that stops before reading: ``issue`` recorded, nothing written."""
    return Plan(
        key=key,
        scenario_id=scenario_id,
        stream=stream,
        end=end,
        chunk_count=0,
        size=0,
        validation=Validation((issue,)),
        stop=stop,
    )


def _earlier_streams(record: RowRecord | None, stream_id: str | None) -> tuple[str, ...]:
    """The stream ids the row held before, the one it leaves now included."""
    if record is None:
        return ()
    if record.stream_id == stream_id:
        return record.earlier
    return (*record.earlier, record.stream_id)


def _adopted(record: RowRecord, snapshot: BufferSnapshot, done: int, kept: bool) -> RowRecord:
    """The row's record when it holds all of a new buffer life (its own list under a new
    meta hash, or retried chunks): that life, recorded before anything of it is trimmed."""
    return replace(
        record,
        stream_id=snapshot.stream_id or "",
        offset=done,
        trimmed=snapshot.trimmed,
        kept=kept,
        earlier=_earlier_streams(record, snapshot.stream_id),
    )


def _written_record(
    record: RowRecord | None,
    snapshot: BufferSnapshot,
    tail: list[bytes],
    *,
    selected: str | None,
    kept: bool,
) -> RowRecord:
    """What the row will say of the buffer after this compaction (``metadata.buffer``);
    ``tail``: the last TAIL_CHUNKS chunks it holds; ``selected``: why a scan chose the
    buffer (idle, at_risk), recorded while its stream is not marked finished."""
    tail = tail[-TAIL_CHUNKS:]
    return RowRecord(
        stream_id=snapshot.stream_id or "",
        offset=snapshot.end,
        trimmed=snapshot.trimmed,
        tail_count=len(tail),
        tail_sha256=fingerprint(tail),
        seq_next=None
        if snapshot.seq_base is None
        else snapshot.seq_base + snapshot.end + snapshot.gaps,
        closed=snapshot.finished,
        provisional=None if snapshot.finished else (selected or BufferState.OPEN),
        kept=kept,
        earlier=_earlier_streams(record, snapshot.stream_id),
    )
