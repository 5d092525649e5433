"""The steps of one compaction once its row is locked: snapshot, read, decide, write.

``genbuffer.compaction.assemble_and_persist`` runs them in order (see its module
docstring for the protocol); ``genbuffer.decision`` holds the values they pass.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from genbuffer import keys
from genbuffer.audit import IssueRecord
from genbuffer.db.repository import GenerationRow, Repository, Transaction
from genbuffer.decision import (
    Decision,
    LateChunks,
    Write,
    adopted,
    already_compacted,
    buffer_missing,
    diverged,
    existing_artifact,
    meets_artifact,
    nothing_new,
    older_than,
    row_values,
    slices,
    written_record,
)
from genbuffer.errors import (
    AmbiguousBuffer,
    DependencyUnavailable,
    GenbufferError,
    NothingToCompact,
    ObjectRefused,
    Quarantined,
    StreamChanged,
    UsageError,
)
from genbuffer.jsoncheck import blocks_are_json
from genbuffer.objects.artifact import OffloadRecord
from genbuffer.objects.offload import (
    SCAN_KEEP,
    STREAM_FIRST_PAGE,
    STREAM_PAGE_BYTES,
    HeldObject,
    Scanned,
    check_held,
    collected,
    held_blocks,
    scan,
)
from genbuffer.placement import TAIL_CHUNKS, RowRecord, place, snapshot_for
from genbuffer.prefixes import check_prefix
from genbuffer.redis import BufferSnapshot, GenerationBuffer
from genbuffer.redis.protocol import PAGE_BYTES, READ_PAGE
from genbuffer.states import LedgerResult
from genbuffer.validator import (
    Validation,
    size_issue,
    validate,
    validate_unparsed,
)

if TYPE_CHECKING:
    from genbuffer.compaction import CompactionConfig, CompactionRequest

__all__ = [
    "STRICT_ABORT",
    "Content",
    "Written",
    "acknowledge",
    "committed",
    "decide",
    "issue_record",
    "ledger_entry",
    "record_attempt",
    "write",
]


STRICT_ABORT = "strict validation failed: nothing persisted"
LEDGER_MESSAGE_MAX = 255  # generation_compactions.message


class Content:
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
class Written:
    """Ids the write got from the database."""

    validation_id: int | None = None
    history_id: int | None = None


def acknowledge(
    request: CompactionRequest,
    decision: Decision,
    buffer: GenerationBuffer,
    config: CompactionConfig,
) -> tuple[bool, int | None, int]:
    """--delete: trim what the row now holds, delete the keys if nothing else is left.

    Returns (deleted, chunks left; None when nothing was acknowledged, chunks trimmed)."""
    due = request.delete and request.acknowledge and not request.dry_run
    if not due or decision.aborted or decision.stream is None:
        return False, None, 0
    config.faults.at("before_ack")
    trimmed, deleted, left = buffer.protocol.acknowledge(
        decision.key, decision.stream, decision.end, True
    )
    return deleted, left, trimmed


def record_attempt(
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


def issue_record(
    request: CompactionRequest, mode: str, issues: list[dict[str, str]], now: datetime
) -> IssueRecord:
    """The issue row and audit line of one validation."""
    return IssueRecord(
        request.organization_id, request.generation_id, mode, request.source, list(issues), now
    )


def ledger_entry(
    request: CompactionRequest,
    decision: Decision | None,
    *,
    result: str,
    mode: str,
    now: datetime,
    message: str | None = None,
) -> dict[str, object]:
    """One `generation_compactions` row: ``result`` is persisted, strict_abort or failed."""
    errors = 0
    lag = None
    if decision is not None:
        errors = sum(1 for issue in decision.validation.issues if issue.severity == "error")
        if decision.last_chunk_at is not None:
            lag = max(0.0, (now - decision.last_chunk_at).total_seconds())
    return {
        "organization_id": request.organization_id,
        "generation_id": request.generation_id,
        "result": result,
        "mode": mode,
        "chunk_count": None if decision is None else decision.chunk_count,
        "bytes": None if decision is None else decision.size,
        "lag_seconds": lag,
        "errors": errors,
        "message": message[:LEDGER_MESSAGE_MAX] if message else None,
        "late_chunks": None if decision is None else decision.regenerated,
        "late_rule": None if decision is None else decision.late_rule,
        "created_at": now,
    }


def decide(
    request: CompactionRequest,
    row: GenerationRow,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    mode: str,
    now: datetime,
    failed: list[Exception] | None = None,
) -> tuple[Decision, Content]:
    """Snapshot the buffer of a locked row, read and validate: what this compaction does.

    An error counted as a failed attempt (not an outage, not a race) is appended to
    ``failed`` before it is raised, for the compaction ledger."""
    key, scenario_id, note = _resolve_key(request, row, buffer)
    record = RowRecord.from_metadata(row.metadata)
    # an artifact that may be offloaded is streamed: a small first page, not 8 MiB held
    # through the whole compaction
    streamed = (
        config.offload.active or OffloadRecord.of_row(row.compacted, row.metadata) is not None
    )
    page = STREAM_FIRST_PAGE if streamed else READ_PAGE
    snapshot = snapshot_for(buffer, key, record, read_only=request.dry_run, page=page)
    if not snapshot.exists:
        if row.compacted is not None and record is not None:
            return already_compacted(key, scenario_id, row), Content()
        check_prefix(buffer)  # buffers under another prefix: the error names it
        if row.compacted is None and older_than(row.created_at, buffer.ttl, now):
            return buffer_missing(key, scenario_id, buffer.ttl), Content()
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
    except (DependencyUnavailable, StreamChanged, UsageError):
        raise  # outages, races and bad settings are never held against the generation
    except ObjectRefused as exc:
        # the ledger says it was refused (its message discloses nothing); not an attempt:
        # the next run refuses it the same way until the row or the settings change
        if not request.dry_run and failed is not None:
            failed.append(exc)
        raise
    except Exception as exc:
        if request.dry_run:
            raise  # a dry run changes nothing, not even the attempt count
        attempts, quarantined = buffer.protocol.record_failure(
            key, f"{type(exc).__name__}: {exc}", config.max_attempts
        )
        if quarantined and isinstance(exc, GenbufferError):
            exc.message += f" (quarantined after {attempts} failed attempts)"
        if failed is not None:
            failed.append(exc)
        raise
    return decision.noted(note), content


@dataclass(frozen=True)
class _Reading:
    """One read of the artifact to write (held bytes, if any, then the new chunks):
    hashed, counted, validated; the bytes when few enough to hold."""

    scanned: Scanned
    validation: Validation
    offloaded: bool  # the artifact goes to (or stays in) the object store
    held_size: int  # bytes of it the row held before
    held: bytes | HeldObject  # what the row held, as it was read (before the new chunks)

    @property
    def over(self) -> bool:
        """Whether reading stopped past what may be held (an oversize artifact)."""
        return self.scanned.over


def _read(
    existing: bytes | OffloadRecord,
    pages: Callable[[], Iterator[list[bytes]]],
    config: CompactionConfig,
    checks: dict[str, Any],
    row: GenerationRow,
) -> _Reading:
    """Read ``existing`` and the new chunks once (twice where the bytes must be held
    but were too many to hold while hashing), then validate them. An offloaded
    ``existing`` passes the trust boundary first (ObjectRefused: nothing is read)."""
    offload = config.offload
    held: bytes | HeldObject
    if isinstance(existing, OffloadRecord):
        held = offload.held(existing, row.organization_id, row.id)
    else:
        held = existing
    to_store = offload.active or isinstance(held, HeldObject)
    held_size = held.record.bytes if isinstance(held, HeldObject) else len(held)
    keep = max(offload.threshold or 0, config.parse_limit) if to_store else config.max_bytes
    scanned = scan(
        held_blocks(held),
        pages(),
        # streamed: hold a small prefix only, the bytes are read again when they must
        # be held (a 1 GB artifact must not cost its threshold in memory on the way)
        keep=min(keep, SCAN_KEEP) if to_store else keep,
        tail_chunks=TAIL_CHUNKS,
        stop_past_keep=not to_store,
        check_utf8=to_store,
        # streamed bytes are checked as JSON on the way, whatever the size turns out to
        # be (held ones only when over the parse limit, below)
        check_json=to_store,
    )
    if to_store and scanned.content is None and scanned.size <= keep:
        scanned = collected(scanned, held_blocks(held), pages())
    offloaded = isinstance(held, HeldObject) or (
        offload.threshold is not None and scanned.size > offload.threshold
    )
    if scanned.over or (not offloaded and scanned.size > config.max_bytes):
        issue = size_issue(scanned.size, config.max_bytes)
        issues = Validation((issue,) if issue else ())
        return _Reading(scanned, issues, offloaded, held_size, held)
    content = scanned.content
    if content is not None and scanned.size <= config.parse_limit:
        validation = validate(content, **checks)
    else:  # past GENERATION_PARSE_MAX_BYTES, in the row or not: checked, never parsed
        utf8_error, json_error = scanned.utf8_error, scanned.json_error
        if not to_store and content is not None:
            utf8_error, json_error = check_held(content)
        validation = validate_unparsed(scanned.size, utf8_error, json_error, **checks)
    return _Reading(scanned, validation, offloaded, held_size, held)


def _late_chunks(
    reading: _Reading, pages: Callable[[], Iterator[list[bytes]]], late_policy: str
) -> LateChunks:
    """How a new stream meets a provisional artifact (``reading``: the two together;
    ``pages``: the new chunks, streamed again when they were too many to hold). The new
    chunks alone are checked as they stream, never parsed into a document."""
    alone = False  # not asked when together they are one document
    if not reading.validation.is_json:
        content = reading.scanned.content
        alone = blocks_are_json(
            (content[reading.held_size :],)
            if content is not None
            else (b"".join(page) for page in pages())
        )
    return LateChunks.after_provisional(
        together_json=reading.validation.is_json, alone_json=alone, late_policy=late_policy
    )


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
) -> tuple[Decision, Content]:
    """Place the buffer against the row, read what is new, validate, and decide."""
    key = snapshot.key
    held = existing_artifact(row)
    placement = place(record, snapshot, closed=record is not None and record.closed)
    if placement.verdict is not None:
        return diverged(key, scenario_id, snapshot, placement), Content()
    start = max(placement.done, snapshot.trimmed)
    to_store = config.offload.active or isinstance(held, OffloadRecord)
    page_bytes = STREAM_PAGE_BYTES if to_store else PAGE_BYTES

    def pages() -> Iterator[list[bytes]]:
        """The new chunks, page by page (read again by each pass that needs them)."""
        return buffer.protocol.read(snapshot, start, snapshot.end, page_bytes=page_bytes)

    checks: dict[str, Any] = {
        "missing_chunks": max(0, snapshot.trimmed - placement.done),
        "extra_chunks": 0 if snapshot.counted is None else max(0, snapshot.end - snapshot.counted),
        "row_metadata": row.metadata,
        "schema": config.schema,
        "gaps": snapshot.gaps + placement.gaps,
    }
    late = None
    if meets_artifact(placement, bool(held)):
        policy = request.regeneration or config.regeneration
        if record is None or record.closed:
            late = LateChunks.after_finished(policy)
            reading = _read(b"" if late.replaces else held, pages, config, checks, row)
        else:  # a provisional artifact: whether the new chunks continue it is in the bytes
            reading = _read(held, pages, config, checks, row)
            late = _late_chunks(reading, pages, config.late_chunks)
            if late.replaces:
                reading = _read(b"", pages, config, checks, row)
    else:
        reading = _read(held, pages, config, checks, row)
    scanned = reading.scanned
    decision = Decision(
        key=key,
        scenario_id=scenario_id,
        stream=snapshot.stream_id,
        end=snapshot.end,
        chunk_count=(0 if late and late.replaces else (row.chunk_count or 0)) + scanned.new_count,
        size=scanned.size,
        new_chunks=scanned.new_count,
        had_failures=snapshot.fields.has_failures,
        last_chunk_at=snapshot.fields.last_chunk_at,
        note=placement.note,
    )
    if reading.over or (not reading.offloaded and scanned.size > config.max_bytes):
        return replace(
            decision,
            validation=reading.validation,
            abort_reason=f"aborted: over GENERATION_MAX_BYTES ({config.max_bytes} bytes)",
        ), Content()
    validation = reading.validation
    # llm_response is written from the bytes themselves; the parsed document (heavier
    # than its text) is not kept past validation. A document the row holds is never
    # wiped by a concatenation that does not parse.
    as_json = validation.is_json and validation.llm_response is not None
    keep_document = row.llm_response is not None and not (late and late.replaces)
    decision = replace(
        decision, validation=replace(validation, llm_response=None), sha256=scanned.sha256
    )
    del validation
    if not scanned.new_count:
        if record is not None and record.stream_id != snapshot.stream_id:
            kept = not request.delete
            decision = replace(decision, adopt=adopted(record, snapshot, placement.done, kept))
        return nothing_new(decision, key, has_history=bool(held) or placement.done > 0), Content()
    if late is not None:
        decision = replace(decision, regenerated=late.outcome, late_rule=late.rule)
    if mode == "strict" and decision.validation.has_errors:
        aborted = replace(decision, abort_reason=STRICT_ABORT)
        return aborted, Content()
    content = scanned.content
    plan = None
    if reading.offloaded:
        plan = config.offload.plan(
            request.organization_id,
            request.generation_id,
            existing=reading.held,  # b"" when replacing
            pages=pages,
            scanned=scanned,
            as_json=as_json,
            is_json=decision.validation.is_json,
        )
        content = None  # the plan streams the bytes again; none are held till the write
    write = Write(
        record=written_record(
            record, snapshot, scanned.tail, selected=request.selected, kept=not request.delete
        ),
        llm_response="json" if as_json else "keep" if keep_document else "null",
        backup_from=reading.held_size,  # 0 when replacing
        sizes=scanned.sizes,
        keep_history=late is not None,
        offload=plan,
    )
    return replace(decision, write=write), Content(content or b"")


def write(
    tx: Transaction,
    request: CompactionRequest,
    row: GenerationRow,
    decision: Decision,
    content: Content,
    *,
    mode: str,
    now: datetime,
    config: CompactionConfig,
) -> Written:
    """Apply the decision to the locked row: history, issue row, backups, the artifact."""
    gen = request.generation_id
    if decision.adopt is not None:
        metadata = {**row.metadata, "buffer": decision.adopt.to_metadata()}
        tx.update_generation(gen, {"metadata": metadata})
    write = decision.write
    if write is None:
        return Written()
    history_id = tx.keep_history(gen, decision.regenerated or "") if write.keep_history else None
    issues = [issue.as_dict() for issue in decision.validation.issues]
    validation_id = issue_record(request, mode, issues, now).insert(tx) if issues else None
    data = content.take()
    offloaded = None
    if write.offload is not None:
        # before the row commits: a crash from here on leaves an orphan object, never a
        # row pointing at nothing (genbuf purge-objects removes orphans)
        offloaded = write.offload.upload()
        config.faults.at("after_upload")
    elif config.backup_chunks:
        backups = slices(data, write.backup_from, write.sizes)
        tx.backup_chunks(request.organization_id, gen, tx.next_backup_seq(gen), backups)
    values = row_values(
        row,
        decision,
        write.record,
        size=decision.size,
        compacted_by=request.compacted_by,
        now=now,
        issues=issues,
        validation_id=validation_id,
        history_id=history_id,
        offloaded=offloaded,
    )
    if offloaded is not None and write.offload is not None:
        tx.save_offloaded(
            gen,
            offloaded.url,
            llm_response=write.llm_response,
            json_text=write.offload.llm_response_json,
            values=values,
        )
    else:
        encoded = base64.b64encode(data)
        del data  # from here on only the base64 bytes are held
        tx.save_artifact(gen, encoded, llm_response=write.llm_response, values=values)
    tx.record_compaction(
        ledger_entry(request, decision, result=LedgerResult.PERSISTED, mode=mode, now=now)
    )
    config.faults.at("after_update")
    return Written(validation_id=validation_id, history_id=history_id)


def _resolve_key(
    request: CompactionRequest, row: GenerationRow, buffer: GenerationBuffer
) -> tuple[str, int | None, str | None]:
    """The chunks key to compact, its scenario, and a note when it was not the obvious one.

    A producer that does not know the scenario at push time writes the key without
    it, while the row has one: both are tried. Both present is an error naming both.
    """
    org, gen = request.organization_id, request.generation_id
    if request.key is not None:
        return request.key, request.scenario_id, None
    if request.exact_key or request.scenario_id is not None:
        return buffer.read_key_for(org, gen, request.scenario_id), request.scenario_id, None
    if row.scenario_id is None:
        return buffer.read_key_for(org, gen, None), None, None
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
        return without, None, f"buffer found under the key without scenario {row.scenario_id}"
    return with_scenario, row.scenario_id, None


def committed(repository: Repository, request: CompactionRequest, decision: Decision) -> bool:
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
