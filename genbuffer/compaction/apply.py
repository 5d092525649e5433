"""4. Apply: the plan written to the locked row, then told, trimmed and counted.

``write`` runs inside the row's transaction (history, issue row, backups or the
upload, the artifact, the ledger row); ``committed`` tells, on a fresh connection,
whether a COMMIT whose reply was lost went through. Once the commit is done,
``settle`` records a stopped plan (its ledger and issue rows, in a transaction of
their own), writes the audit line, announces the outcome on the completion
stream, trims what the commit holds (--delete) and counts the attempt.
``count_failure`` is the same bookkeeping for a compaction that raised.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from genbuffer.compaction.placement import RowRecord
from genbuffer.compaction.records import issue_record, ledger_entry, row_values, slices
from genbuffer.errors import DependencyUnavailable, GenbufferError
from genbuffer.redis.completions import Completion, Completions
from genbuffer.states import LedgerResult, ValidationMode

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.plan import Content, Plan
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.db.repository import Repository
    from genbuffer.db.rows import GenerationRow
    from genbuffer.db.transaction import Transaction
    from genbuffer.redis import GenerationBuffer

__all__ = ["Applied", "Counting", "Failed", "Written", "committed", "count_failure", "settle"]


@dataclass(frozen=True)
class Written:
    """Ids the write got from the database."""

    validation_id: int | None = None
    history_id: int | None = None


@dataclass(frozen=True)
class Applied:
    """What applying the plan did (all defaults: nothing, as for a dry run)."""

    validation_id: int | None = None
    history_id: int | None = None
    announced: bool = False  # a completion event went out
    deleted: bool = False  # the buffer's keys were deleted
    chunks_left: int | None = None  # None: nothing was trimmed here
    attempts: int = 0  # failed attempts counted so far (a stopped plan's included)
    quarantined: bool = False


class Counting(StrEnum):
    """How a compaction that raised is counted."""

    ATTEMPT = "attempt"  # an attempt towards quarantine, and a ledger row
    LEDGER = "ledger"  # a ledger row only (an object refused: refused the same way again)


@dataclass(frozen=True)
class Failed:
    """A compaction that raised while validating or planning, to be counted, then raised."""

    error: Exception
    counting: Counting


def write(
    tx: Transaction,
    request: CompactionRequest,
    row: GenerationRow,
    plan: Plan,
    content: Content,
    *,
    mode: ValidationMode,
    now: datetime,
    config: CompactionConfig,
) -> Written:
    """Apply the plan to the locked row: history, issue row, backups, the artifact."""
    gen = request.generation_id
    if plan.adopt is not None:
        metadata = {**row.metadata, "buffer": plan.adopt.to_metadata()}
        tx.update_generation(gen, {"metadata": metadata})
    planned = plan.write
    if planned is None:
        return Written()
    history_id = tx.keep_history(gen, plan.regenerated or "") if planned.keep_history else None
    issues = [issue.as_dict() for issue in plan.validation.issues]
    validation_id = issue_record(request, mode, issues, now).insert(tx) if issues else None
    data = content.take()
    offloaded = None
    if planned.offload is not None:
        # before the row commits: a crash from here on leaves an orphan object, never a
        # row pointing at nothing (genbuf purge-objects removes orphans)
        offloaded = planned.offload.upload()
        config.faults.at("after_upload")
    elif config.backup_chunks:
        backups = slices(data, planned.backup_from, planned.sizes)
        tx.backup_chunks(request.organization_id, gen, tx.next_backup_seq(gen), backups)
    values = row_values(
        row,
        plan,
        planned.record,
        compacted_by=request.compacted_by,
        now=now,
        issues=issues,
        validation_id=validation_id,
        history_id=history_id,
        offloaded=offloaded,
    )
    record = ledger_entry(request, plan, result=LedgerResult.PERSISTED, mode=mode, now=now)
    if offloaded is not None and planned.offload is not None:
        tx.save_offloaded(
            gen,
            offloaded.url,
            llm_response=planned.llm_response,
            json_text=planned.offload.llm_response_json,
            values=values,
        )
        tx.record_compaction(record)
    else:
        encoded = base64.b64encode(data)
        del data  # from here on only the base64 bytes are held
        # the ledger row with the artifact (PostgreSQL: one statement, one round trip)
        tx.save_artifact(
            gen, encoded, llm_response=planned.llm_response, values=values, record=record
        )
    config.faults.at("after_update")
    return Written(validation_id=validation_id, history_id=history_id)


def committed(repository: Repository, request: CompactionRequest, plan: Plan) -> bool:
    """Whether the row now holds exactly what this compaction wrote."""
    row = repository.get_generation(request.generation_id)
    if row is None or not isinstance(row.metadata, dict):
        return False
    record = RowRecord.from_metadata(row.metadata)
    return (
        row.metadata.get("sha256") == plan.sha256
        and record is not None
        and (record.stream_id, record.offset) == (plan.stream, plan.end)
    )


def settle(
    request: CompactionRequest,
    plan: Plan,
    written: Written,
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
    mode: ValidationMode,
    now: datetime,
) -> Applied:
    """After the commit: a stop's ledger and issue rows, the audit line, the completion
    event (before the buffer is trimmed), the trim, the attempt count."""
    issues = [issue.as_dict() for issue in plan.validation.issues]
    validation_id = written.validation_id
    if plan.stop is not None:
        with repository.transaction() as tx:  # strict mode still records what it found
            if issues:
                validation_id = issue_record(request, mode, issues, now).insert(tx)
            tx.record_compaction(
                ledger_entry(
                    request,
                    plan,
                    result=plan.stop.cause.ledger_result,
                    mode=mode,
                    now=now,
                    message=plan.stop.reason,
                )
            )
    if validation_id is not None:
        issue_record(request, mode, issues, now).log(config.audit_log, validation_id)
    completion = None
    if plan.announcement is not None:
        completion = _completion(
            request, plan, validation_id=validation_id, outcome=plan.announcement
        )
    announced, deleted, left = _announce_and_trim(completion, request, plan, buffer, config)
    attempts, quarantined = _count(plan, buffer, config)
    return Applied(
        validation_id=validation_id,
        history_id=written.history_id,
        announced=announced,
        deleted=deleted,
        chunks_left=left,
        attempts=attempts,
        quarantined=quarantined,
    )


def _completion(
    request: CompactionRequest, plan: Plan, *, validation_id: int | None, outcome: LedgerResult
) -> Completion:
    """The completion event of this compaction."""
    return Completion(
        organization_id=request.organization_id,
        generation_id=request.generation_id,
        scenario_id=plan.scenario_id,
        outcome=outcome,
        validation_id=validation_id,
        chunk_count=plan.chunk_count,
        bytes=plan.size,
        sha256=plan.sha256,
    )


def _announce_and_trim(
    completion: Completion | None,
    request: CompactionRequest,
    plan: Plan,
    buffer: GenerationBuffer,
    config: CompactionConfig,
) -> tuple[bool, bool, int | None]:
    """The completion event (never fails the compaction for Redis: see
    genbuffer.redis.completions), then --delete's trim of what the row now holds (the
    keys deleted if nothing else is left; not here when the engine trims in batches).
    Both in one round trip when both are due (the event is sent first, in the same
    pipeline). Returns (announced, deleted, chunks left: None when nothing was trimmed
    here)."""
    completions = Completions(buffer.target, max_length=config.completion_events)
    trim = plan.trim
    if trim is None or (request.found is not None and request.found.trim_later):
        announced = completion is not None and completions.announce(completion)
        return announced, False, None
    command = None if completion is None else completions.command(completion)
    config.faults.at("before_ack")
    if completion is None or command is None:
        _, deleted, left = buffer.protocol.acknowledge(trim.key, trim.stream, trim.end, True)
        return False, deleted, left
    try:
        reply, (_, deleted, left) = buffer.protocol.acknowledge_after(
            command, trim.key, trim.stream, trim.end, True
        )
    except DependencyUnavailable as error:  # neither went out: the next run does both
        completions.not_announced(completion, error)
        raise
    if isinstance(reply, Exception):
        completions.not_announced(completion, reply)
        return False, deleted, left
    return True, deleted, left


def _count(plan: Plan, buffer: GenerationBuffer, config: CompactionConfig) -> tuple[int, bool]:
    """Count a stopped attempt, or forget the failures before a success. Returns
    (attempts, quarantined)."""
    if plan.stop is not None and plan.counts_as_attempt:
        return buffer.protocol.record_failure(plan.key, plan.stop.reason, config.max_attempts)
    if plan.persists and plan.had_failures:
        buffer.protocol.clear_failures(plan.key)
    return 0, False


def count_failure(
    failed: Failed,
    request: CompactionRequest,
    key: str,
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
    mode: ValidationMode,
    now: datetime,
) -> None:
    """A compaction that raised: an attempt counted against ``key`` (the message says
    when that quarantined it), and a ledger row, best effort (the error is raised)."""
    error = failed.error
    if failed.counting is Counting.ATTEMPT:
        attempts, quarantined = buffer.protocol.record_failure(
            key, f"{type(error).__name__}: {error}", config.max_attempts
        )
        if quarantined and isinstance(error, GenbufferError):
            error.message += f" (quarantined after {attempts} failed attempts)"
    text = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
    try:
        with repository.transaction() as tx:
            tx.record_compaction(
                ledger_entry(
                    request, None, result=LedgerResult.FAILED, mode=mode, now=now, message=str(text)
                )
            )
    except GenbufferError:
        pass  # the database is what failed: the error raised says so
