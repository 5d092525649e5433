"""assemble_and_persist: buffer → validator → repository → audit, without losing a chunk.

The protocol, per generation::

    BEGIN; SELECT … FOR UPDATE the row        one compactor at a time (SQLite: BEGIN IMMEDIATE)
    snapshot the buffer (Lua)                 length + meta atomically; stream id; TTL lease
    read chunks [done, end) by absolute position, in pages
    validate the whole artifact (existing + new)
    strict with errors → ROLLBACK; issue row + JSONL in their own transaction; exit 1
    else UPDATE the row (append, never overwrite), issue row, chunk backups; COMMIT
    JSONL line; with --delete acknowledge: trim exactly the committed chunks (Lua),
    and delete the keys only if nothing arrived meanwhile

The row records which buffer stream it holds and up to which position
(``metadata.buffer``), so a crash anywhere, a retry or a second compactor
appends exactly the chunks not yet persisted. There is no claim to sweep after
a crash: the row lock dies with the connection, and the buffer is only trimmed
below what a committed row already holds. A COMMIT whose reply is lost is
checked on a fresh connection before anything is acknowledged.

A generation whose compaction keeps failing (an abort, or an unexpected error;
not an outage) is quarantined after COMPACTION_MAX_ATTEMPTS attempts, and
refused until ``--force``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from genbuffer import keys
from genbuffer.audit import IssueRecord
from genbuffer.db.repository import GenerationRow, Repository, Transaction
from genbuffer.errors import (
    AmbiguousBuffer,
    DatabaseUnavailable,
    DependencyUnavailable,
    ForeignArtifact,
    GenbufferError,
    GenerationNotFound,
    NothingToCompact,
    Quarantined,
    StreamChanged,
    UsageError,
)
from genbuffer.faults import FaultPlan
from genbuffer.placement import (
    TAIL_CHUNKS,
    Placement,
    RowRecord,
    fingerprint,
    place,
    snapshot_for,
)
from genbuffer.prefixes import check_prefix
from genbuffer.redis import BufferSnapshot, GenerationBuffer
from genbuffer.settings import Settings
from genbuffer.validator import Issue, Validation, size_issue, validate

__all__ = [
    "CompactionConfig",
    "CompactionRequest",
    "CompactionResult",
    "assemble_and_persist",
]


@dataclass(frozen=True)
class CompactionConfig:
    """The settings compaction reads, resolved once."""

    strict: bool = False
    max_bytes: int = 256 * 1024 * 1024
    schema: dict[str, Any] | None = None
    backup_chunks: bool = True
    audit_log: Path = Path("storage/logs/metadata-validation.log")
    max_attempts: int = 5
    regeneration: str = "replace"  # GENERATION_REGENERATION: "replace" or "append"
    faults: FaultPlan = field(default_factory=FaultPlan)

    @classmethod
    def from_settings(cls, settings: Settings) -> CompactionConfig:
        """Resolve the settings, loading the JSON Schema file when one is named."""
        schema = None
        if settings.generation_json_schema is not None:
            path = settings.generation_json_schema
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"GENERATION_JSON_SCHEMA {path} is unreadable: {exc}") from None
        return cls(
            strict=settings.metadata_validation_strict,
            max_bytes=settings.generation_max_bytes,
            schema=schema,
            backup_chunks=settings.generation_chunks_backup,
            audit_log=settings.metadata_validation_log,
            max_attempts=settings.compaction_max_attempts,
            regeneration=settings.generation_regeneration,
        )


@dataclass(frozen=True)
class CompactionRequest:
    """What to compact and how."""

    organization_id: int
    generation_id: int
    scenario_id: int | None = None
    delete: bool = False
    strict: bool | None = None  # None: METADATA_VALIDATION_STRICT
    compacted_by: str = "genbuf"
    dry_run: bool = False
    source: str = "compaction"
    force: bool = False  # compact a quarantined generation anyway
    acknowledge: bool = True  # False: the caller trims later (compact-pending batches it)
    # True: the key is exactly the one scenario_id names (None: the key without one),
    # as a scan found it; False: try the row's scenario key and the key without one.
    exact_key: bool = False
    closes_stream: bool = False  # the stream is over (compact-pending took it as idle)
    regeneration: str | None = None  # None: GENERATION_REGENERATION


class CompactionResult(BaseModel):
    """The outcome, as `compact-generation --json` prints it."""

    ok: bool
    persisted: bool
    organization_id: int
    generation_id: int
    scenario_id: int | None
    key: str
    chunk_count: int
    bytes: int
    validation_id: int | None
    issues: list[dict[str, str]]
    deleted: bool
    mode: str
    dry_run: bool = False
    new_chunks: int = 0
    chunks_left: int | None = None
    sha256: str | None = None
    attempts: int = 0
    quarantined: bool = False
    message: str = ""
    stream_id: str | None = None
    stream_end: int = 0
    regenerated: str | None = None  # "replaced" or "appended": a new stream met an artifact
    history_id: int | None = None  # where the artifact it met is kept


_LOSS_CODES = frozenset({"chunk_count_mismatch", "sequence_gap", "buffer_missing"})
COMPACTED_BY_MAX = 255  # the column's length


@dataclass
class _Outcome:
    """What happened while the row was locked."""

    key: str
    scenario_id: int | None
    stream: str | None
    end: int
    chunk_count: int
    size: int
    new_chunks: int = 0
    validation: Validation = field(default_factory=Validation)
    sha256: str | None = None
    persist: bool = False
    abort_reason: str | None = None
    validation_id: int | None = None
    had_failures: bool = False
    note: str | None = None  # said in the message (which key, already compacted, …)
    regenerated: str | None = None
    history_id: int | None = None

    @property
    def aborted(self) -> bool:
        """Whether the compaction was abandoned (strict errors, oversize, nothing left)."""
        return self.abort_reason is not None

    @property
    def lost_chunks(self) -> bool:
        """Whether validation found chunks missing from the buffer."""
        return any(
            issue.code in _LOSS_CODES and issue.severity == "error"
            for issue in self.validation.issues
        )


class _Rollback(Exception):
    """Leaves the row transaction so that it rolls back."""


def _existing_artifact(row: GenerationRow) -> bytes:
    """The bytes the row already holds; refuse an artifact genbuf cannot account for."""
    legacy = isinstance(row.metadata, dict) and "compacted" in row.metadata
    if row.compacted is None and not legacy:
        return b""
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


def _read_new_chunks(
    buffer: GenerationBuffer, snapshot: BufferSnapshot, start: int, budget: int
) -> tuple[list[bytes], int, bool]:
    """Read chunks from ``start`` to the snapshot's end; stop once over ``budget`` bytes."""
    chunks: list[bytes] = []
    size = 0
    for page in buffer.protocol.read(snapshot, start, snapshot.end):
        chunks.extend(page)
        size += sum(map(len, page))
        if size > budget:
            return chunks, size, True
    return chunks, size, False


def assemble_and_persist(
    request: CompactionRequest,
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
) -> CompactionResult:
    """Compact one generation's buffer into its `scenario_generations` row."""
    if not 0 < len(request.compacted_by) <= COMPACTED_BY_MAX:
        raise UsageError(
            f"compacted_by (--by) must be 1 to {COMPACTED_BY_MAX} characters, "
            f"got {len(request.compacted_by)}"
        )
    strict = config.strict if request.strict is None else request.strict
    mode = "strict" if strict else "soft"
    now = datetime.now(UTC)
    outcome: _Outcome | None = None
    try:
        with repository.transaction() as tx:
            outcome = _compact_locked(request, tx, buffer, config, mode=mode, now=now)
            if outcome.aborted or request.dry_run:
                raise _Rollback
            config.faults.at("before_commit")
    except _Rollback:
        pass
    except DatabaseUnavailable:
        # The connection may have failed on COMMIT itself, leaving its outcome unknown:
        # look on a fresh connection, and acknowledge nothing unless it was applied.
        if outcome is None or not outcome.persist or not _committed(repository, request, outcome):
            raise
    assert outcome is not None  # _compact_locked either returned or raised past here
    config.faults.at("after_commit")
    issues = [issue.as_dict() for issue in outcome.validation.issues]
    if outcome.aborted and issues and not request.dry_run:
        with repository.transaction() as tx:  # strict mode still records what it found
            outcome.validation_id = _issue_record(request, mode, issues, now).insert(tx)
    if outcome.validation_id is not None:
        _issue_record(request, mode, issues, now).log(config.audit_log, outcome.validation_id)
    deleted, left = False, None
    ack_due = request.delete and not request.dry_run and not outcome.aborted
    if ack_due and request.acknowledge and outcome.stream is not None:
        config.faults.at("before_ack")
        _, deleted, left = buffer.protocol.acknowledge(
            outcome.key, outcome.stream, outcome.end, True
        )
    persisted = outcome.persist and not request.dry_run
    attempts, quarantined = 0, False
    if outcome.aborted and not request.dry_run and not outcome.lost_chunks and outcome.stream:
        attempts, quarantined = buffer.protocol.record_failure(
            outcome.key, outcome.abort_reason or "aborted", config.max_attempts
        )
    elif persisted and outcome.had_failures:
        buffer.protocol.clear_failures(outcome.key)
    return CompactionResult(
        ok=not outcome.aborted and not outcome.lost_chunks,
        persisted=persisted,
        organization_id=request.organization_id,
        generation_id=request.generation_id,
        scenario_id=outcome.scenario_id,
        key=outcome.key,
        chunk_count=outcome.chunk_count,
        bytes=outcome.size,
        validation_id=outcome.validation_id,
        issues=issues,
        deleted=deleted,
        mode=mode,
        dry_run=request.dry_run,
        new_chunks=outcome.new_chunks,
        chunks_left=left,
        sha256=outcome.sha256,
        attempts=attempts,
        quarantined=quarantined,
        stream_id=outcome.stream,
        stream_end=outcome.end,
        regenerated=outcome.regenerated,
        history_id=outcome.history_id,
        message=_message(outcome, persisted=persisted, deleted=deleted, dry_run=request.dry_run)
        + (f"; quarantined after {attempts} failed attempts" if quarantined else ""),
    )


def _message(outcome: _Outcome, *, persisted: bool, deleted: bool, dry_run: bool) -> str:
    if outcome.abort_reason is not None:
        return outcome.abort_reason
    if dry_run and outcome.new_chunks:
        parts = [f"dry run: would persist {outcome.new_chunks} new chunks"]
    elif persisted:
        parts = [f"persisted {outcome.new_chunks} new chunks"]
    else:
        parts = ["already compacted: nothing new"]
    if outcome.regenerated is not None:
        verb = "would replace" if dry_run else outcome.regenerated
        parts.append(
            f"a new stream {verb} the previous artifact"
            + (f" (kept as history {outcome.history_id})" if outcome.history_id else "")
        )
    if outcome.note:
        parts.append(outcome.note)
    if outcome.lost_chunks:
        parts.append("chunks were lost before compaction (see issues)")
    if deleted:
        parts.append("buffer deleted")
    return "; ".join(parts)


def _issue_record(
    request: CompactionRequest, mode: str, issues: list[dict[str, str]], now: datetime
) -> IssueRecord:
    return IssueRecord(
        request.organization_id, request.generation_id, mode, request.source, list(issues), now
    )


def _compact_locked(
    request: CompactionRequest,
    tx: Transaction,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    mode: str,
    now: datetime,
) -> _Outcome:
    """Everything that happens while the row is locked."""
    row = tx.lock_generation(request.generation_id)
    if row is None or row.organization_id != request.organization_id:
        raise GenerationNotFound(
            f"no generation {request.generation_id} for organization {request.organization_id}"
        )
    key, scenario_id, note = _resolve_key(request, row, buffer)
    record = RowRecord.from_metadata(row.metadata)
    snapshot = snapshot_for(buffer, key, record, read_only=request.dry_run)
    if not snapshot.exists:
        if row.compacted is not None and record is not None:
            return _Outcome(  # done before: a re-run is a success that changes nothing
                key=key,
                scenario_id=scenario_id,
                stream=None,
                end=record.offset,
                chunk_count=row.chunk_count or 0,
                size=int(row.metadata.get("bytes", 0)),
                sha256=row.metadata.get("sha256"),
                note="no buffer left in Redis",
            )
        check_prefix(buffer)  # buffers under another prefix: the error names it
        if row.compacted is None and _older_than(row.created_at, buffer.ttl, now):
            return _buffer_missing(key, scenario_id, buffer.ttl)
        raise NothingToCompact(
            f"nothing to compact: no Redis buffer at {key}",
            hint="check the ids, --scenario-id and REDIS_PREFIX (genbuf config show)",
        )
    if snapshot.quarantined and not request.force:
        raise Quarantined(
            f"generation {request.generation_id} is quarantined after "
            f"{snapshot.meta.get('attempts', '?')} failed attempts: "
            f"{snapshot.meta.get('last_error', 'unknown error')}",
            hint="fix the cause, then run compact-generation with --force",
        )
    config.faults.at("after_snapshot")
    try:
        outcome = _compact_snapshot(
            request,
            tx,
            buffer,
            config,
            row=row,
            record=record,
            snapshot=snapshot,
            mode=mode,
            now=now,
        )
    except (DependencyUnavailable, StreamChanged):
        raise  # outages and races are retried, never held against the generation
    except Exception as exc:
        if request.dry_run:
            raise  # a dry run changes nothing, not even the attempt count
        attempts, quarantined = buffer.protocol.record_failure(
            key, f"{type(exc).__name__}: {exc}", config.max_attempts
        )
        if quarantined and isinstance(exc, GenbufferError):
            exc.message += f" (quarantined after {attempts} failed attempts)"
        raise
    outcome.scenario_id = scenario_id
    outcome.note = "; ".join(part for part in (note, outcome.note) if part) or None
    return outcome


def _older_than(created_at: datetime | None, seconds: int, now: datetime) -> bool:
    """Whether a row was created more than ``seconds`` ago (unknown: no)."""
    if created_at is None:
        return False
    stamp = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return (now - stamp).total_seconds() > seconds


def _buffer_missing(key: str, scenario_id: int | None, ttl: int) -> _Outcome:
    """A row older than the chunk TTL with no artifact and no buffer: its chunks are lost."""
    issue = Issue(
        "buffer_missing",
        f"no artifact and no buffer at {key}, and the row is older than the chunk TTL "
        f"({ttl} s): its chunks expired or were evicted before any compaction",
    )
    return _Outcome(
        key=key,
        scenario_id=scenario_id,
        stream=None,
        end=0,
        chunk_count=0,
        size=0,
        validation=Validation((issue,)),
        abort_reason="lost: the buffer is gone and nothing was ever compacted (see issues)",
    )


def _regeneration(
    request: CompactionRequest,
    config: CompactionConfig,
    record: RowRecord | None,
    placement: Placement,
    has_artifact: bool,
) -> tuple[bool, bool]:
    """(a new stream meets the artifact, it replaces it). A regeneration replaces a whole
    artifact by default; anything else is continued; the history keeps what it met."""
    new_stream = has_artifact and not placement.continues
    policy = request.regeneration or config.regeneration
    closed = record is not None and record.closed
    return new_stream, new_stream and policy == "replace" and closed


def _adopt_stream(
    tx: Transaction,
    request: CompactionRequest,
    *,
    row: GenerationRow,
    record: RowRecord,
    snapshot: BufferSnapshot,
    done: int,
) -> None:
    """The row holds all of a new buffer life (its own list under a new meta hash, or
    retried chunks): record that life now, before anything of it is trimmed."""
    moved = replace(
        record,
        stream_id=snapshot.stream_id or "",
        offset=done,
        trimmed=snapshot.trimmed,
        kept=not request.delete,
        earlier=_earlier(record, snapshot.stream_id),
    )
    metadata = {**row.metadata, "buffer": moved.to_metadata()}
    tx.update_generation(request.generation_id, {"metadata": metadata})


def _written_record(
    record: RowRecord | None,
    snapshot: BufferSnapshot,
    content: bytes,
    sizes: list[int],
    request: CompactionRequest,
) -> RowRecord:
    """What the row will say of the buffer after this compaction (``metadata.buffer``)."""
    tail_sizes = sizes[-TAIL_CHUNKS:]
    tail = list(_slices(content, len(content) - sum(tail_sizes), tail_sizes))
    return RowRecord(
        stream_id=snapshot.stream_id or "",
        offset=snapshot.end,
        trimmed=snapshot.trimmed,
        tail_count=len(tail),
        tail_sha256=fingerprint(tail),
        seq_next=None
        if snapshot.seq_base is None
        else snapshot.seq_base + snapshot.end + snapshot.gaps,
        closed=snapshot.finished or request.closes_stream,
        kept=not request.delete,
        earlier=_earlier(record, snapshot.stream_id),
    )


def _earlier(record: RowRecord | None, stream_id: str | None) -> tuple[str, ...]:
    """The stream ids the row held before, the one it leaves now included."""
    if record is None:
        return ()
    if record.stream_id == stream_id:
        return record.earlier
    return (*record.earlier, record.stream_id)


def _diverged(
    key: str, scenario_id: int | None, snapshot: BufferSnapshot, placement: Placement
) -> _Outcome:
    """Stop: the buffer does not hold what the row says it persisted last."""
    issue = Issue(
        "stream_diverged",
        f"the buffer at {key} diverged from the row: {placement.note}; nothing was "
        "persisted or deleted (after a failover, compare the buffer with the row)",
    )
    return _Outcome(
        key=key,
        scenario_id=scenario_id,
        stream=snapshot.stream_id,
        end=snapshot.end,
        chunk_count=0,
        size=0,
        validation=Validation((issue,)),
        abort_reason="stopped: the buffer diverged from what the row holds (see issues)",
    )


def _resolve_key(
    request: CompactionRequest, row: GenerationRow, buffer: GenerationBuffer
) -> tuple[str, int | None, str | None]:
    """The chunks key to compact, its scenario, and a note when it was not the obvious one.

    A producer that does not know the scenario at push time writes the key without
    it, while the row has one: both are tried. Both present is an error naming both.
    """
    org, gen = request.organization_id, request.generation_id
    if request.exact_key or request.scenario_id is not None:
        return buffer.key_for(org, gen, request.scenario_id), request.scenario_id, None
    if row.scenario_id is None:
        return buffer.key_for(org, gen, None), None, None
    with_scenario = buffer.key_for(org, gen, row.scenario_id)
    without = buffer.key_for(org, gen, None)
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
        return without, None, f"buffer found under the key without scenario {row.scenario_id}"
    return with_scenario, row.scenario_id, None


def _compact_snapshot(
    request: CompactionRequest,
    tx: Transaction,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    row: GenerationRow,
    record: RowRecord | None,
    snapshot: BufferSnapshot,
    mode: str,
    now: datetime,
) -> _Outcome:
    """Read, validate and write, for a row already locked and a buffer snapshot taken."""
    key = snapshot.key
    scenario_id = request.scenario_id if request.scenario_id is not None else row.scenario_id
    held = _existing_artifact(row)
    placement = place(record, snapshot, closed=record is not None and record.closed)
    if placement.verdict is not None:
        return _diverged(key, scenario_id, snapshot, placement)
    done = placement.done
    new_stream, replacing = _regeneration(request, config, record, placement, bool(held))
    existing = b"" if replacing else held
    base_count = 0 if replacing else (row.chunk_count or 0)
    start = max(done, snapshot.trimmed)
    new_chunks, new_size, over = _read_new_chunks(
        buffer, snapshot, start, config.max_bytes - len(existing)
    )
    outcome = _Outcome(
        key=key,
        scenario_id=scenario_id,
        stream=snapshot.stream_id,
        end=snapshot.end,
        chunk_count=base_count + len(new_chunks),
        size=len(existing) + new_size,
        new_chunks=len(new_chunks),
        had_failures="attempts" in snapshot.meta,
        note=placement.note,
    )
    if over:
        issue = size_issue(outcome.size, config.max_bytes)
        outcome.validation = Validation((issue,) if issue else ())
        outcome.abort_reason = f"aborted: over GENERATION_MAX_BYTES ({config.max_bytes} bytes)"
        return outcome
    # One copy of the new bytes: the chunk list goes as soon as it is joined, and the
    # backups are sliced from the joined bytes (a 64 MB generation must not cost 8x).
    sizes = list(map(len, new_chunks))
    content = existing + b"".join(new_chunks) if existing else b"".join(new_chunks)
    del new_chunks
    validation = validate(
        content,
        missing_chunks=max(0, snapshot.trimmed - done),
        extra_chunks=0 if snapshot.counted is None else max(0, snapshot.end - snapshot.counted),
        row_metadata=row.metadata,
        schema=config.schema,
        gaps=snapshot.gaps + placement.gaps,
    )
    # llm_response is written from the bytes themselves; the parsed document (heavier
    # than its text) is not kept past validation.
    as_json = validation.is_json and validation.llm_response is not None
    # a document the row holds is never wiped by a concatenation that does not parse
    llm_response = (
        "json" if as_json else "keep" if row.llm_response is not None and not replacing else "null"
    )
    outcome.validation = replace(validation, llm_response=None)
    del validation
    outcome.sha256 = hashlib.sha256(content).hexdigest()
    if not sizes:
        if record is not None and record.stream_id != snapshot.stream_id and not request.dry_run:
            _adopt_stream(tx, request, row=row, record=record, snapshot=snapshot, done=done)
        return _nothing_new(outcome, key, has_history=bool(held) or done > 0)
    if new_stream:
        outcome.regenerated = "replaced" if replacing else "appended"
    if mode == "strict" and outcome.validation.has_errors:
        outcome.abort_reason = "strict validation failed: nothing persisted"
        return outcome
    if request.dry_run:
        return outcome
    if new_stream:
        outcome.history_id = tx.keep_history(request.generation_id, outcome.regenerated or "")
    issues = [issue.as_dict() for issue in outcome.validation.issues]
    if issues:
        outcome.validation_id = _issue_record(request, mode, issues, now).insert(tx)
    if config.backup_chunks:
        tx.backup_chunks(
            request.organization_id,
            request.generation_id,
            tx.next_backup_seq(request.generation_id),
            _slices(content, len(existing), sizes),
        )
    written = _written_record(record, snapshot, content, sizes, request)
    values = _row_values(
        row,
        content,
        outcome,
        compacted_by=request.compacted_by,
        now=now,
        issues=issues,
        record=written,
    )
    encoded = base64.b64encode(content)
    del content, existing, held  # from here on only the base64 bytes are held
    tx.save_artifact(request.generation_id, encoded, llm_response=llm_response, values=values)
    config.faults.at("after_update")
    outcome.persist = True
    return outcome


def _slices(content: bytes, start: int, sizes: list[int]) -> Iterator[memoryview]:
    """The chunks again, as views into the joined bytes (no copies)."""
    view = memoryview(content)
    for size in sizes:
        yield view[start : start + size]
        start += size


def _committed(repository: Repository, request: CompactionRequest, outcome: _Outcome) -> bool:
    """Whether the row now holds exactly what this compaction wrote."""
    row = repository.get_generation(request.generation_id)
    if row is None or not isinstance(row.metadata, dict):
        return False
    record = RowRecord.from_metadata(row.metadata)
    return (
        row.metadata.get("sha256") == outcome.sha256
        and record is not None
        and (record.stream_id, record.offset) == (outcome.stream, outcome.end)
    )


def _nothing_new(outcome: _Outcome, key: str, *, has_history: bool) -> _Outcome:
    """No chunk to add: chunks lost before compaction, up to date, or nothing at all."""
    if outcome.lost_chunks:
        # recorded (issue row, audit line) and exit 1 on every run until someone looks
        lost = tuple(i for i in outcome.validation.issues if i.code in _LOSS_CODES)
        outcome.validation = Validation(lost)
        outcome.abort_reason = "nothing new to compact, and chunks were lost (see issues)"
        return outcome
    if has_history:
        return outcome  # up to date: nothing to write, maybe something to acknowledge
    raise NothingToCompact(f"nothing to compact: the buffer at {key} holds no chunks")


def _row_values(
    row: GenerationRow,
    content: bytes,
    outcome: _Outcome,
    *,
    compacted_by: str,
    now: datetime,
    issues: list[dict[str, str]],
    record: RowRecord,
) -> dict[str, Any]:
    """The row's columns besides the artifact's two; metadata keeps everything but the blob."""
    metadata: dict[str, Any]
    if isinstance(row.metadata, dict):
        metadata = {k: v for k, v in row.metadata.items() if k != "compacted"}
    else:
        metadata = {} if row.metadata is None else {"previous_metadata": row.metadata}
    if outcome.history_id is not None:
        previous = row.metadata if isinstance(row.metadata, dict) else {}
        metadata["history"] = [
            *(previous.get("history") or []),
            {
                "id": outcome.history_id,
                "reason": outcome.regenerated,
                "sha256": previous.get("sha256"),
                "bytes": previous.get("bytes"),
                "chunk_count": row.chunk_count,
                "at": now.isoformat(),
            },
        ]
    metadata.update(
        chunk_count=outcome.chunk_count,
        compacted_at=now.isoformat(),
        bytes=len(content),
        sha256=outcome.sha256,
        buffer=record.to_metadata(),
    )
    if issues:
        metadata["validation_errors"] = issues
    else:
        metadata.pop("validation_errors", None)
    values: dict[str, Any] = {
        "metadata": metadata,
        "chunk_count": outcome.chunk_count,
        "compacted_at": now,
        "compacted_by": compacted_by,
        "updated_at": now,
    }
    values["last_validation_issue_id"] = (
        outcome.validation_id if outcome.validation_id is not None else row.last_validation_issue_id
    )
    return values
