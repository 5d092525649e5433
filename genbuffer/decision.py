"""What one compaction does, as a value: decided while the row is locked, applied after.

``Decision`` says what was read (the stream, up to which position), what the row
will hold (``Write``: the new record of the buffer, backups, llm_response), what
``--delete`` may acknowledge, and why it stops when it does (``abort_reason``).
The functions here are pure: they take the row, the buffer's snapshot and the
validation, and return values; ``genbuffer.compaction`` does the I/O around them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from genbuffer.db.repository import GenerationRow
from genbuffer.errors import ForeignArtifact, NothingToCompact
from genbuffer.objects.artifact import OffloadRecord
from genbuffer.placement import TAIL_CHUNKS, Placement, RowRecord, fingerprint
from genbuffer.redis import BufferSnapshot
from genbuffer.states import BufferState, LateOutcome
from genbuffer.validator import Issue, Validation

if TYPE_CHECKING:
    from genbuffer.objects.offload import OffloadPlan

__all__ = [
    "LOSS_CODES",
    "Decision",
    "LateChunks",
    "Write",
    "already_compacted",
    "buffer_missing",
    "diverged",
    "existing_artifact",
    "message",
    "row_values",
    "slices",
]

LOSS_CODES = frozenset({"chunk_count_mismatch", "sequence_gap", "buffer_missing"})

# Why a new stream of a generation appends to, or replaces, the artifact the row holds
FINISHED = "finished"  # the row's stream was marked finished: GENERATION_REGENERATION
JSON_CONTINUES = "json_continues"  # artifact + new chunks parse as one JSON document
JSON_NEW_DOCUMENT = "json_new_document"  # the new chunks parse alone, together they do not
LATE_CHUNKS_SETTING = "late_chunks_setting"  # neither tells: GENERATION_LATE_CHUNKS
RULE_REASONS = {
    FINISHED: ": its stream was marked finished (GENERATION_REGENERATION)",
    JSON_CONTINUES: ": together they parse as one JSON document",
    JSON_NEW_DOCUMENT: ": the new chunks parse alone, together they do not",
    LATE_CHUNKS_SETTING: ": neither parses as JSON (GENERATION_LATE_CHUNKS)",
}


@dataclass(frozen=True)
class LateChunks:
    """How a new stream meets the artifact its row holds: appended or replaced, and why."""

    replaces: bool
    rule: str

    @property
    def outcome(self) -> LateOutcome:
        """`replaced` or `appended`, as the row, the ledger and the message say it."""
        return LateOutcome.REPLACED if self.replaces else LateOutcome.APPENDED

    @classmethod
    def after_finished(cls, policy: str) -> LateChunks:
        """The row's stream was marked finished: a later stream is a regeneration,
        replaced or appended as GENERATION_REGENERATION says."""
        return cls(replaces=policy == "replace", rule=FINISHED)

    @classmethod
    def after_provisional(
        cls, *, together_json: bool, alone_json: bool, late_policy: str
    ) -> LateChunks:
        """The row's stream was compacted before it was marked finished (idle, about
        to expire, or by hand): the new chunks continue it when the two parse as one
        JSON document, replace it when only the new chunks parse, and otherwise do
        what GENERATION_LATE_CHUNKS says."""
        if together_json:
            return cls(replaces=False, rule=JSON_CONTINUES)
        if alone_json:
            return cls(replaces=True, rule=JSON_NEW_DOCUMENT)
        return cls(replaces=late_policy == "replace", rule=LATE_CHUNKS_SETTING)


@dataclass(frozen=True)
class Write:
    """What the row will hold after this compaction, besides the artifact's bytes."""

    record: RowRecord  # metadata.buffer: the stream and how far the row holds it
    llm_response: str  # "json" (parse the artifact), "keep" (leave it), "null"
    backup_from: int  # where the new chunks start in the artifact's bytes …
    sizes: tuple[int, ...]  # … and their sizes, for the chunk backups
    keep_history: bool  # a new stream meets the artifact: keep the old one first
    offload: OffloadPlan | None = None  # set: the artifact goes to the object store


@dataclass(frozen=True)
class Decision:
    """The outcome of a compaction, before anything is written or acknowledged."""

    key: str
    scenario_id: int | None
    stream: str | None  # the buffer life read (None: there was no buffer)
    end: int  # absolute position the row holds the stream to: what --delete trims below
    chunk_count: int
    size: int
    new_chunks: int = 0
    validation: Validation = field(default_factory=Validation)
    sha256: str | None = None
    abort_reason: str | None = None  # set: nothing is written, the run exits 1
    note: str | None = None  # said in the message (which key, already compacted, …)
    regenerated: str | None = None  # "replaced" or "appended": a new stream met the artifact
    late_rule: str | None = None  # why (LateChunks.rule)
    had_failures: bool = False  # failed attempts were recorded before this one
    write: Write | None = None  # None: the artifact stays as it is
    adopt: RowRecord | None = None  # a new buffer life the row already holds whole
    last_chunk_at: datetime | None = None  # when the producer pushed last (the ledger's lag)

    @property
    def aborted(self) -> bool:
        """Whether the compaction stops without writing (strict errors, oversize, loss)."""
        return self.abort_reason is not None

    @property
    def lost_chunks(self) -> bool:
        """Whether validation found chunks missing from the buffer."""
        return any(
            issue.code in LOSS_CODES and issue.severity == "error"
            for issue in self.validation.issues
        )

    def noted(self, note: str | None) -> Decision:
        """The same decision with ``note`` said before its own."""
        return replace(self, note="; ".join(part for part in (note, self.note) if part) or None)


def existing_artifact(row: GenerationRow) -> bytes | OffloadRecord:
    """The bytes the row already holds, or the record of its offloaded object; refuse an
    artifact genbuf cannot account for."""
    legacy = isinstance(row.metadata, dict) and "compacted" in row.metadata
    if row.compacted is None and not legacy:
        return b""
    if RowRecord.from_metadata(row.metadata) is not None and (
        offloaded := OffloadRecord.of_row(row.compacted, row.metadata)
    ):
        return offloaded
    if RowRecord.from_metadata(row.metadata) is None or row.compacted is None:
        raise ForeignArtifact(
            f"generation {row.id} already holds an artifact that genbuf did not write",
            hint="run `genbuf migrate-compacted-from-metadata` first"
            if legacy
            else "it was compacted by another tool; nothing was changed",
        )
    try:
        data = base64.b64decode(row.compacted, validate=True)
    except (binascii.Error, ValueError):
        raise ForeignArtifact(f"generation {row.id}: compacted is not valid base64") from None
    if row.metadata.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ForeignArtifact(
            f"generation {row.id}: compacted was changed outside genbuf (sha256 differs)",
            hint="nothing was changed; inspect the row before compacting it again",
        )
    return data


def already_compacted(key: str, scenario_id: int | None, row: GenerationRow) -> Decision:
    """No buffer, and the row holds an artifact genbuf wrote: a re-run changes nothing."""
    record = RowRecord.from_metadata(row.metadata)
    return Decision(
        key=key,
        scenario_id=scenario_id,
        stream=None,
        end=0 if record is None else record.offset,
        chunk_count=row.chunk_count or 0,
        size=int(row.metadata.get("bytes", 0)),
        sha256=row.metadata.get("sha256"),
        note="no buffer left in Redis",
    )


def older_than(created_at: datetime | None, seconds: int, now: datetime) -> bool:
    """Whether a row was created more than ``seconds`` ago (unknown: no)."""
    if created_at is None:
        return False
    stamp = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return (now - stamp).total_seconds() > seconds


def buffer_missing(key: str, scenario_id: int | None, ttl: int) -> Decision:
    """A row older than the chunk TTL with no artifact and no buffer: its chunks are lost."""
    issue = Issue(
        "buffer_missing",
        f"no artifact and no buffer at {key}, and the row is older than the chunk TTL "
        f"({ttl} s): its chunks expired or were evicted before any compaction",
    )
    return _stopped(
        key,
        scenario_id,
        issue,
        "lost: the buffer is gone and nothing was ever compacted (see issues)",
    )


def diverged(
    key: str, scenario_id: int | None, snapshot: BufferSnapshot, placement: Placement
) -> Decision:
    """Stop: the buffer does not hold what the row says it persisted last."""
    issue = Issue(
        "stream_diverged",
        f"the buffer at {key} diverged from the row: {placement.note}; nothing was "
        "persisted or deleted (after a failover, compare the buffer with the row)",
    )
    return _stopped(
        key,
        scenario_id,
        issue,
        "stopped: the buffer diverged from what the row holds (see issues)",
        stream=snapshot.stream_id,
        end=snapshot.end,
    )


def _stopped(
    key: str,
    scenario_id: int | None,
    issue: Issue,
    reason: str,
    *,
    stream: str | None = None,
    end: int = 0,
) -> Decision:
    """A compaction that stops before reading: ``issue`` recorded, nothing written."""
    return Decision(
        key=key,
        scenario_id=scenario_id,
        stream=stream,
        end=end,
        chunk_count=0,
        size=0,
        validation=Validation((issue,)),
        abort_reason=reason,
    )


def meets_artifact(placement: Placement, has_artifact: bool) -> bool:
    """Whether the buffer is a new stream meeting the artifact the row holds (rather
    than the row's own stream, continued)."""
    return has_artifact and not placement.continues


def earlier_streams(record: RowRecord | None, stream_id: str | None) -> tuple[str, ...]:
    """The stream ids the row held before, the one it leaves now included."""
    if record is None:
        return ()
    if record.stream_id == stream_id:
        return record.earlier
    return (*record.earlier, record.stream_id)


def adopted(record: RowRecord, snapshot: BufferSnapshot, done: int, kept: bool) -> RowRecord:
    """The row's record when it holds all of a new buffer life (its own list under a new
    meta hash, or retried chunks): that life, recorded before anything of it is trimmed."""
    return replace(
        record,
        stream_id=snapshot.stream_id or "",
        offset=done,
        trimmed=snapshot.trimmed,
        kept=kept,
        earlier=earlier_streams(record, snapshot.stream_id),
    )


def written_record(
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
        earlier=earlier_streams(record, snapshot.stream_id),
    )


def nothing_new(decision: Decision, key: str, *, has_history: bool) -> Decision:
    """No chunk to add: chunks lost before compaction, up to date, or nothing at all."""
    if decision.lost_chunks:
        # recorded (issue row, audit line) and exit 1 on every run until someone looks
        lost = tuple(i for i in decision.validation.issues if i.code in LOSS_CODES)
        return replace(
            decision,
            validation=Validation(lost),
            abort_reason="nothing new to compact, and chunks were lost (see issues)",
        )
    if has_history:
        return decision  # up to date: nothing to write, maybe something to acknowledge
    raise NothingToCompact(f"nothing to compact: the buffer at {key} holds no chunks")


def slices(content: bytes, start: int, sizes: list[int] | tuple[int, ...]) -> Iterator[memoryview]:
    """The chunks again, as views into the joined bytes (no copies)."""
    view = memoryview(content)
    for size in sizes:
        yield view[start : start + size]
        start += size


def message(
    decision: Decision, *, persisted: bool, deleted: bool, dry_run: bool, history_id: int | None
) -> str:
    """The one-line summary of a compaction, as the CLI prints it."""
    if decision.abort_reason is not None:
        return decision.abort_reason
    if dry_run and decision.new_chunks:
        parts = [f"dry run: would persist {decision.new_chunks} new chunks"]
    elif persisted:
        parts = [f"persisted {decision.new_chunks} new chunks"]
    else:
        parts = ["already compacted: nothing new"]
    if decision.regenerated is not None:
        verbs = {
            "replaced": ("replaced", "would replace"),
            "appended": ("appended to", "would append to"),
        }
        verb = verbs[decision.regenerated][dry_run]
        kept = f" (kept as history {history_id})" if history_id else ""
        why = RULE_REASONS.get(decision.late_rule or "", "")
        parts.append(f"a new stream {verb} the previous artifact{kept}{why}")
    if decision.note:
        parts.append(decision.note)
    if decision.lost_chunks:
        parts.append("chunks were lost before compaction (see issues)")
    if deleted:
        parts.append("buffer deleted")
    return "; ".join(parts)


def row_values(
    row: GenerationRow,
    decision: Decision,
    record: RowRecord,
    *,
    size: int,
    compacted_by: str,
    now: datetime,
    issues: list[dict[str, str]],
    validation_id: int | None,
    history_id: int | None,
    offloaded: OffloadRecord | None = None,
) -> dict[str, Any]:
    """The row's columns besides the artifact's two; metadata keeps everything but the blob
    (and, for an offloaded artifact, records where it went)."""
    metadata: dict[str, Any]
    if isinstance(row.metadata, dict):
        metadata = {k: v for k, v in row.metadata.items() if k != "compacted"}
    else:
        metadata = {} if row.metadata is None else {"previous_metadata": row.metadata}
    if history_id is not None:
        previous = row.metadata if isinstance(row.metadata, dict) else {}
        metadata["history"] = [
            *(previous.get("history") or []),
            {
                "id": history_id,
                "reason": decision.regenerated,
                "rule": decision.late_rule,
                "sha256": previous.get("sha256"),
                "bytes": previous.get("bytes"),
                "chunk_count": row.chunk_count,
                "at": now.isoformat(),
            },
        ]
    metadata.update(
        chunk_count=decision.chunk_count,
        compacted_at=now.isoformat(),
        bytes=size,
        sha256=decision.sha256,
        buffer=record.to_metadata(),
    )
    if offloaded is not None:
        metadata["offloaded"] = offloaded.to_metadata()
    else:
        metadata.pop("offloaded", None)
    if issues:
        metadata["validation_errors"] = issues
    else:
        metadata.pop("validation_errors", None)
    return {
        "metadata": metadata,
        "chunk_count": decision.chunk_count,
        "compacted_at": now,
        "compacted_by": compacted_by,
        "updated_at": now,
        "last_validation_issue_id": validation_id
        if validation_id is not None
        else row.last_validation_issue_id,
    }
