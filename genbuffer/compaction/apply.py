"""4. Apply: the plan written to the locked row, then told, trimmed and counted.

``write`` runs inside the row's transaction (history, issue row, backups or the
upload, the artifact, the ledger row); ``committed`` tells, on a fresh connection,
whether a COMMIT whose reply was lost went through. Once the commit is done,
``settle_many`` (one compaction's, or a batch's) records a stopped plan (its ledger
and issue rows, in a transaction of their own), writes the audit line, announces the
outcome on the completion stream, trims what the commit holds (--delete) and counts
the attempt; the events and trims of all in one round trip.
``count_failure`` is the same bookkeeping for a compaction that raised.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from genbuffer.compaction.placement import RowRecord
from genbuffer.compaction.records import issue_record, ledger_entry, row_values, slices
from genbuffer.errors import DependencyUnavailable, GenbufferError
from genbuffer.redis.completions import Completion, Completions
from genbuffer.states import LedgerResult, ValidationMode

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.plan import Content, Plan, Trim
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.db.repository import Repository
    from genbuffer.db.rows import GenerationRow
    from genbuffer.db.transaction import Transaction
    from genbuffer.redis import GenerationBuffer

__all__ = [
    "Applied",
    "Counting",
    "Failed",
    "Settling",
    "Written",
    "committed",
    "count_failure",
    "settle_many",
]


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


@dataclass(frozen=True)
class Settling:
    """A committed compaction to settle: its request, plan, what it wrote, how it
    validated, when."""

    request: CompactionRequest
    plan: Plan
    written: Written
    mode: ValidationMode
    now: datetime


def settle_many(
    items: list[Settling],
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
) -> list[Applied | Exception]:
    """After the commit, for each compaction: a stop's ledger and issue rows, the audit
    line; then every completion event (each before its buffer is trimmed) and trim in
    one round trip; then each one's attempt count. What one comes to, or the error that
    stopped it, does not stop the others'."""
    settled: list[Applied | Exception | None] = [None] * len(items)
    told: list[tuple[int, int | None, Completion | None]] = []
    for index, item in enumerate(items):
        try:
            validation_id = _recorded(item, repository=repository, config=config)
        except Exception as error:  # this compaction's (an outage, too)
            settled[index] = error
            continue
        plan = item.plan
        completion = None
        if plan.announcement is not None:
            completion = _completion(
                item.request, plan, validation_id=validation_id, outcome=plan.announcement
            )
        told.append((index, validation_id, completion))
    trims = _announce_and_trim(
        [(completion, items[index]) for index, _, completion in told], buffer, config
    )
    for (index, validation_id, _), trimmed in zip(told, trims, strict=True):
        if isinstance(trimmed, Exception):
            settled[index] = trimmed
            continue
        announced, deleted, left = trimmed
        try:
            attempts, quarantined = _count(items[index].plan, buffer, config)
        except Exception as error:
            settled[index] = error
            continue
        settled[index] = Applied(
            validation_id=validation_id,
            history_id=items[index].written.history_id,
            announced=announced,
            deleted=deleted,
            chunks_left=left,
            attempts=attempts,
            quarantined=quarantined,
        )
    return [outcome for outcome in settled if outcome is not None]


def _recorded(item: Settling, *, repository: Repository, config: CompactionConfig) -> int | None:
    """A stop's ledger and issue rows (in a transaction of their own), and the audit
    line; the validation id."""
    request, plan, mode, now = item.request, item.plan, item.mode, item.now
    issues = [issue.as_dict() for issue in plan.validation.issues]
    validation_id = item.written.validation_id
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
    return validation_id


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


Trimmed = tuple[bool, bool, int | None]  # announced, deleted, chunks left (None: no trim)


def _announce_and_trim(
    told: list[tuple[Completion | None, Settling]],
    buffer: GenerationBuffer,
    config: CompactionConfig,
) -> list[Trimmed | Exception]:
    """Each completion event (never fails a compaction for Redis: see
    genbuffer.redis.completions), then --delete's trim of what the row now holds (the
    keys deleted if nothing else is left; not here when the engine trims in batches).
    The events and trims due go in one round trip (each event sent before its trim).
    For each: (announced, deleted, chunks left: None when nothing was trimmed here),
    or the error that stopped its trim."""
    completions = Completions(buffer.target, max_length=config.completion_events)
    trimmed: list[Trimmed | Exception | None] = [None] * len(told)
    acks: list[tuple[int, tuple[Any, ...] | None, Completion | None, Trim]] = []
    for index, (completion, item) in enumerate(told):
        trim, found = item.plan.trim, item.request.found
        if trim is None or (found is not None and found.trim_later):
            try:
                announced = completion is not None and completions.announce(completion)
            except Exception as error:
                trimmed[index] = error
            else:
                trimmed[index] = (announced, False, None)
            continue
        command = None if completion is None else completions.command(completion)
        config.faults.at("before_ack")
        acks.append((index, command, completion, trim))
    if acks:
        try:
            replies = buffer.protocol.acknowledge_each_after(
                [(command, trim.key, trim.stream, trim.end) for _, command, _, trim in acks],
                True,
            )
        except DependencyUnavailable as error:  # none went out: the next runs do them
            for index, _, completion, _ in acks:
                if completion is not None:
                    completions.not_announced(completion, error)
                trimmed[index] = error
        else:
            for (index, command, completion, _), (reply, acked) in zip(acks, replies, strict=True):
                if isinstance(acked, Exception):
                    trimmed[index] = acked
                    continue
                _, deleted, left = acked
                announced = completion is not None and command is not None
                if completion is not None and isinstance(reply, Exception):
                    completions.not_announced(completion, reply)
                    announced = False
                trimmed[index] = (announced, deleted, left)
    return [outcome for outcome in trimmed if outcome is not None]


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
