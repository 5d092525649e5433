"""assemble_and_persist: buffer → validator → repository → audit, without losing a chunk.

The protocol, per generation::

    BEGIN; SELECT … FOR UPDATE the row        one compactor at a time (SQLite: BEGIN IMMEDIATE)
    snapshot the buffer (Lua)                 length + meta atomically; stream id; TTL lease
    read chunks [done, end) by absolute position, in pages
    validate the whole artifact (existing + new)
    decide (genbuffer.decision): what to write, or why to stop
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
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from genbuffer import keys
from genbuffer.audit import IssueRecord
from genbuffer.db.repository import GenerationRow, Repository, Transaction
from genbuffer.decision import (
    Decision,
    Write,
    adopted,
    already_compacted,
    buffer_missing,
    diverged,
    existing_artifact,
    message,
    nothing_new,
    older_than,
    regeneration,
    row_values,
    slices,
    written_record,
)
from genbuffer.errors import (
    AmbiguousBuffer,
    DependencyUnavailable,
    GenbufferError,
    GenerationNotFound,
    NothingToCompact,
    Quarantined,
    StreamChanged,
    UsageError,
)
from genbuffer.faults import FaultPlan
from genbuffer.placement import RowRecord, place, snapshot_for
from genbuffer.prefixes import check_prefix
from genbuffer.redis import BufferSnapshot, GenerationBuffer
from genbuffer.settings import Settings
from genbuffer.validator import Validation, size_issue, validate

__all__ = [
    "CompactionConfig",
    "CompactionRequest",
    "CompactionResult",
    "assemble_and_persist",
]

COMPACTED_BY_MAX = 255  # the column's length


@dataclass(frozen=True)
class CompactionConfig:
    """The settings compaction reads, resolved once; ``faults`` is a seam for tests."""

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


class _Content:
    """The assembled bytes, handed from the decision to the write exactly once, so that
    the write can drop them once encoded (a 64 MB artifact must not be held twice)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes = b"") -> None:
        self._data = data

    def take(self) -> bytes:
        """The bytes; the holder keeps none."""
        data, self._data = self._data, b""
        return data


@dataclass(frozen=True)
class _Written:
    """Ids the write got from the database."""

    validation_id: int | None = None
    history_id: int | None = None


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
    mode = "strict" if (config.strict if request.strict is None else request.strict) else "soft"
    now = datetime.now(UTC)
    with repository.transaction() as tx:
        row, decision, content = _decide(request, tx, buffer, config, mode=mode, now=now)
        if decision.aborted or request.dry_run:
            tx.rollback()
            written = _Written()
        else:
            written = _write(tx, request, row, decision, content, mode=mode, now=now, config=config)
            config.faults.at("before_commit")
            # a COMMIT whose reply is lost: look on a fresh connection before going on
            tx.verify_commit_with(lambda: _committed(repository, request, decision))
    config.faults.at("after_commit")
    issues = [issue.as_dict() for issue in decision.validation.issues]
    validation_id = written.validation_id
    if decision.aborted and issues and not request.dry_run:
        with repository.transaction() as tx:  # strict mode still records what it found
            validation_id = _issue_record(request, mode, issues, now).insert(tx)
    if validation_id is not None:
        _issue_record(request, mode, issues, now).log(config.audit_log, validation_id)
    deleted, left = _acknowledge(request, decision, buffer, config)
    persisted = decision.write is not None and not decision.aborted and not request.dry_run
    attempts, quarantined = _record_attempt(decision, buffer, config, request, persisted)
    return CompactionResult(
        ok=not decision.aborted and not decision.lost_chunks,
        persisted=persisted,
        organization_id=request.organization_id,
        generation_id=request.generation_id,
        scenario_id=decision.scenario_id,
        key=decision.key,
        chunk_count=decision.chunk_count,
        bytes=decision.size,
        validation_id=validation_id,
        issues=issues,
        deleted=deleted,
        mode=mode,
        dry_run=request.dry_run,
        new_chunks=decision.new_chunks,
        chunks_left=left,
        sha256=decision.sha256,
        attempts=attempts,
        quarantined=quarantined,
        stream_id=decision.stream,
        stream_end=decision.end,
        regenerated=decision.regenerated,
        history_id=written.history_id,
        message=message(
            decision,
            persisted=persisted,
            deleted=deleted,
            dry_run=request.dry_run,
            history_id=written.history_id,
        )
        + (f"; quarantined after {attempts} failed attempts" if quarantined else ""),
    )


def _acknowledge(
    request: CompactionRequest,
    decision: Decision,
    buffer: GenerationBuffer,
    config: CompactionConfig,
) -> tuple[bool, int | None]:
    """--delete: trim what the row now holds, delete the keys if nothing else is left.

    Returns (deleted, chunks left; None when nothing was acknowledged)."""
    due = request.delete and request.acknowledge and not request.dry_run
    if not due or decision.aborted or decision.stream is None:
        return False, None
    config.faults.at("before_ack")
    _, deleted, left = buffer.protocol.acknowledge(
        decision.key, decision.stream, decision.end, True
    )
    return deleted, left


def _record_attempt(
    decision: Decision,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    request: CompactionRequest,
    persisted: bool,
) -> tuple[int, bool]:
    """Count an aborted attempt (not a loss: that is reported on every run), or forget the
    failures before a success. Returns (attempts, quarantined)."""
    if decision.aborted and not request.dry_run and not decision.lost_chunks and decision.stream:
        return buffer.protocol.record_failure(
            decision.key, decision.abort_reason or "aborted", config.max_attempts
        )
    if persisted and decision.had_failures:
        buffer.protocol.clear_failures(decision.key)
    return 0, False


def _issue_record(
    request: CompactionRequest, mode: str, issues: list[dict[str, str]], now: datetime
) -> IssueRecord:
    return IssueRecord(
        request.organization_id, request.generation_id, mode, request.source, list(issues), now
    )


def _decide(
    request: CompactionRequest,
    tx: Transaction,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    mode: str,
    now: datetime,
) -> tuple[GenerationRow, Decision, _Content]:
    """Lock the row, snapshot the buffer, read and validate: what this compaction does."""
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
            return row, already_compacted(key, scenario_id, row), _Content()
        check_prefix(buffer)  # buffers under another prefix: the error names it
        if row.compacted is None and older_than(row.created_at, buffer.ttl, now):
            return row, buffer_missing(key, scenario_id, buffer.ttl), _Content()
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
        decision, content = _decide_on_snapshot(
            request,
            buffer,
            config,
            row=row,
            record=record,
            snapshot=snapshot,
            scenario_id=scenario_id,
            mode=mode,
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
    return row, decision.noted(note), content


def _decide_on_snapshot(
    request: CompactionRequest,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    row: GenerationRow,
    record: RowRecord | None,
    snapshot: BufferSnapshot,
    scenario_id: int | None,
    mode: str,
) -> tuple[Decision, _Content]:
    """Place the buffer against the row, read what is new, validate, and decide."""
    key = snapshot.key
    held = existing_artifact(row)
    placement = place(record, snapshot, closed=record is not None and record.closed)
    if placement.verdict is not None:
        return diverged(key, scenario_id, snapshot, placement), _Content()
    policy = request.regeneration or config.regeneration
    new_stream, replacing = regeneration(policy, record, placement, bool(held))
    existing = b"" if replacing else held
    new_chunks, new_size, over = _read_new_chunks(
        buffer, snapshot, max(placement.done, snapshot.trimmed), config.max_bytes - len(existing)
    )
    decision = Decision(
        key=key,
        scenario_id=scenario_id,
        stream=snapshot.stream_id,
        end=snapshot.end,
        chunk_count=(0 if replacing else (row.chunk_count or 0)) + len(new_chunks),
        size=len(existing) + new_size,
        new_chunks=len(new_chunks),
        had_failures=snapshot.fields.has_failures,
        note=placement.note,
    )
    if over:
        issue = size_issue(decision.size, config.max_bytes)
        return replace(
            decision,
            validation=Validation((issue,) if issue else ()),
            abort_reason=f"aborted: over GENERATION_MAX_BYTES ({config.max_bytes} bytes)",
        ), _Content()
    # One copy of the new bytes: the chunk list goes as soon as it is joined, and the
    # backups are sliced from the joined bytes (a 64 MB generation must not cost 8x).
    sizes = tuple(map(len, new_chunks))
    content = existing + b"".join(new_chunks) if existing else b"".join(new_chunks)
    del new_chunks
    validation = validate(
        content,
        missing_chunks=max(0, snapshot.trimmed - placement.done),
        extra_chunks=0 if snapshot.counted is None else max(0, snapshot.end - snapshot.counted),
        row_metadata=row.metadata,
        schema=config.schema,
        gaps=snapshot.gaps + placement.gaps,
    )
    # llm_response is written from the bytes themselves; the parsed document (heavier
    # than its text) is not kept past validation. A document the row holds is never
    # wiped by a concatenation that does not parse.
    as_json = validation.is_json and validation.llm_response is not None
    keep = row.llm_response is not None and not replacing
    decision = replace(
        decision,
        validation=replace(validation, llm_response=None),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    del validation
    if not sizes:
        if record is not None and record.stream_id != snapshot.stream_id:
            kept = not request.delete
            decision = replace(decision, adopt=adopted(record, snapshot, placement.done, kept))
        return nothing_new(decision, key, has_history=bool(held) or placement.done > 0), _Content()
    if new_stream:
        decision = replace(decision, regenerated="replaced" if replacing else "appended")
    if mode == "strict" and decision.validation.has_errors:
        aborted = replace(decision, abort_reason="strict validation failed: nothing persisted")
        return aborted, _Content()
    write = Write(
        record=written_record(
            record,
            snapshot,
            content,
            sizes,
            closed=request.closes_stream,
            kept=not request.delete,
        ),
        llm_response="json" if as_json else "keep" if keep else "null",
        backup_from=len(existing),
        sizes=sizes,
        keep_history=new_stream,
    )
    return replace(decision, write=write), _Content(content)


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


def _write(
    tx: Transaction,
    request: CompactionRequest,
    row: GenerationRow,
    decision: Decision,
    content: _Content,
    *,
    mode: str,
    now: datetime,
    config: CompactionConfig,
) -> _Written:
    """Apply the decision to the locked row: history, issue row, backups, the artifact."""
    gen = request.generation_id
    if decision.adopt is not None:
        metadata = {**row.metadata, "buffer": decision.adopt.to_metadata()}
        tx.update_generation(gen, {"metadata": metadata})
    write = decision.write
    if write is None:
        return _Written()
    history_id = tx.keep_history(gen, decision.regenerated or "") if write.keep_history else None
    issues = [issue.as_dict() for issue in decision.validation.issues]
    validation_id = _issue_record(request, mode, issues, now).insert(tx) if issues else None
    data = content.take()
    if config.backup_chunks:
        backups = slices(data, write.backup_from, write.sizes)
        tx.backup_chunks(request.organization_id, gen, tx.next_backup_seq(gen), backups)
    values = row_values(
        row,
        decision,
        write.record,
        size=len(data),
        compacted_by=request.compacted_by,
        now=now,
        issues=issues,
        validation_id=validation_id,
        history_id=history_id,
    )
    encoded = base64.b64encode(data)
    del data  # from here on only the base64 bytes are held
    tx.save_artifact(gen, encoded, llm_response=write.llm_response, values=values)
    config.faults.at("after_update")
    return _Written(validation_id=validation_id, history_id=history_id)


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


def _committed(repository: Repository, request: CompactionRequest, decision: Decision) -> bool:
    """Whether the row now holds exactly what this compaction wrote."""
    row = repository.get_generation(request.generation_id)
    if row is None or not isinstance(row.metadata, dict):
        return False
    record = RowRecord.from_metadata(row.metadata)
    return (
        row.metadata.get("sha256") == decision.sha256
        and record is not None
        and (record.stream_id, record.offset) == (decision.stream, decision.end)
    )
