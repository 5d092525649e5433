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

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genbuffer.documents import Document
from genbuffer.errors import GenbufferError, GenerationNotFound, UsageError
from genbuffer.faults import FaultPlan
from genbuffer.objects.offload import Offload
from genbuffer.settings import Settings
from genbuffer.states import LedgerResult

if TYPE_CHECKING:
    from genbuffer.db.repository import Repository
    from genbuffer.decision import Decision
    from genbuffer.redis import GenerationBuffer

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
    parse_limit: int = 8 * 1024 * 1024  # GENERATION_PARSE_MAX_BYTES
    schema: dict[str, Any] | None = None
    backup_chunks: bool = True
    audit_log: Path = Path("storage/logs/metadata-validation.log")
    max_attempts: int = 5
    regeneration: str = "replace"  # GENERATION_REGENERATION: "replace" or "append"
    late_chunks: str = "append"  # GENERATION_LATE_CHUNKS: "append" or "replace"
    offload: Offload = field(default_factory=Offload)  # GENERATION_OFFLOAD_*
    completion_events: int = 10_000  # GENERATION_COMPLETION_EVENTS_MAX_LEN (0: none)
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
            from genbuffer.validator import schema_problem  # noqa: PLC0415

            # a bad setting stops the command here, before any generation is compacted
            # (and counted as a failed attempt) for it
            if problem := schema_problem(schema):
                raise UsageError(
                    f"GENERATION_JSON_SCHEMA {path} cannot be used: {problem}",
                    hint="fix the schema (every $ref must resolve inside it), or unset it",
                )
        return cls(
            strict=settings.metadata_validation_strict,
            max_bytes=settings.generation_max_bytes,
            parse_limit=settings.generation_parse_max_bytes,
            schema=schema,
            backup_chunks=settings.generation_chunks_backup,
            audit_log=settings.metadata_validation_log,
            max_attempts=settings.compaction_max_attempts,
            regeneration=settings.generation_regeneration,
            late_chunks=settings.generation_late_chunks,
            offload=Offload.from_settings(settings),
            completion_events=settings.generation_completion_events_max_len,
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
    # the chunks key as a scan or a producer named it, used as it is (no lookup of
    # which key template holds the buffer)
    key: str | None = None
    # why a scan chose the buffer (compact-pending, the worker's sweeper): finished, idle
    # or at_risk; an artifact of a stream not marked finished is provisional
    selected: str | None = None
    regeneration: str | None = None  # None: GENERATION_REGENERATION


class CompactionResult(Document):
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
    announced: bool = False  # a completion event went out (genbuffer.redis.completions)


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
    failed: list[Exception] = []  # an error counted as a failed attempt, for the ledger
    try:
        with repository.transaction() as tx:
            row = tx.lock_generation(request.generation_id)
            if row is None or row.organization_id != request.organization_id:
                raise GenerationNotFound(
                    f"no generation {request.generation_id} for organization "
                    f"{request.organization_id}"
                )
            # The steps load once there is a row to compact: a run that stops before
            # (no such row, an outage) does not pay for importing them (start-up time).
            from genbuffer import compactor  # noqa: PLC0415
            from genbuffer.decision import message  # noqa: PLC0415

            decision, content = compactor.decide(
                request, row, buffer, config, mode=mode, now=now, failed=failed
            )
            if decision.aborted or request.dry_run:
                tx.rollback()
                written = compactor.Written()
            else:
                written = compactor.write(
                    tx, request, row, decision, content, mode=mode, now=now, config=config
                )
                config.faults.at("before_commit")
                # a COMMIT whose reply is lost: look on a fresh connection before going on
                tx.verify_commit_with(lambda: compactor.committed(repository, request, decision))
    except Exception as exc:
        if failed:  # after the row's transaction: SQLite allows one writer at a time
            _record_failure(repository, request, mode=mode, now=now, error=exc)
        raise
    config.faults.at("after_commit")
    issues = [issue.as_dict() for issue in decision.validation.issues]
    validation_id = written.validation_id
    if decision.aborted and not request.dry_run:
        result = (
            LedgerResult.STRICT_ABORT
            if decision.abort_reason == compactor.STRICT_ABORT
            else LedgerResult.FAILED
        )
        with repository.transaction() as tx:  # strict mode still records what it found
            if issues:
                validation_id = compactor.issue_record(request, mode, issues, now).insert(tx)
            tx.record_compaction(
                compactor.ledger_entry(
                    request,
                    decision,
                    result=result,
                    mode=mode,
                    now=now,
                    message=decision.abort_reason,
                )
            )
    if validation_id is not None:
        compactor.issue_record(request, mode, issues, now).log(config.audit_log, validation_id)
    persisted = decision.write is not None and not decision.aborted and not request.dry_run
    strict_abort = decision.abort_reason == compactor.STRICT_ABORT and not request.dry_run
    announced = False
    if persisted or strict_abort:  # after the commit, before the buffer is trimmed
        announced = _announce(buffer, config, request, decision, validation_id, persisted=persisted)
    elif _held_and_due(request, decision):
        # the row already held these chunks and they are still buffered: the run that
        # committed them died before its trim, maybe before its announcement. Announced
        # again before this run's trim (here, or compact-pending's batch): at least once
        announced = _announce(buffer, config, request, decision, validation_id, persisted=True)
    deleted, left, _ = compactor.acknowledge(request, decision, buffer, config)
    attempts, quarantined = compactor.record_attempt(decision, buffer, config, request, persisted)
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
        announced=announced,
        message=message(
            decision,
            persisted=persisted,
            deleted=deleted,
            dry_run=request.dry_run,
            history_id=written.history_id,
        )
        + (f"; quarantined after {attempts} failed attempts" if quarantined else ""),
    )


def _held_and_due(request: CompactionRequest, decision: Decision) -> bool:
    """Whether the row already holds the whole buffer, which this run (or the batch it is
    part of: ``request.acknowledge`` False) is about to trim."""
    return (
        request.delete
        and not request.dry_run
        and decision.stream is not None
        and decision.write is None
        and not decision.aborted
        and not decision.lost_chunks
    )


def _announce(
    buffer: GenerationBuffer,
    config: CompactionConfig,
    request: CompactionRequest,
    decision: Decision,
    validation_id: int | None,
    *,
    persisted: bool,
) -> bool:
    """Add the completion event (never raises for Redis: see genbuffer.redis.completions)."""
    from genbuffer.redis.completions import Completion, Completions  # noqa: PLC0415

    completion = Completion(
        organization_id=request.organization_id,
        generation_id=request.generation_id,
        scenario_id=decision.scenario_id,
        outcome="persisted" if persisted else "strict_abort",
        validation_id=validation_id,
        chunk_count=decision.chunk_count,
        bytes=decision.size,
        sha256=decision.sha256,
    )
    return Completions(buffer.target, max_length=config.completion_events).announce(completion)


def _record_failure(
    repository: Repository,
    request: CompactionRequest,
    *,
    mode: str,
    now: datetime,
    error: Exception,
) -> None:
    """Add a failed attempt to the ledger; best effort (the error itself is raised)."""
    from genbuffer import compactor  # noqa: PLC0415

    text = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
    try:
        with repository.transaction() as tx:
            tx.record_compaction(
                compactor.ledger_entry(
                    request, None, result=LedgerResult.FAILED, mode=mode, now=now, message=str(text)
                )
            )
    except GenbufferError:
        pass  # the database is what failed: the error raised says so
