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
appends exactly the chunks not yet persisted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from genbuffer.audit import append_audit_line, audit_record
from genbuffer.buffer import BufferSnapshot, GenerationBuffer
from genbuffer.db.repository import GenerationRow, Repository, Transaction
from genbuffer.errors import ForeignArtifact, GenerationNotFound, NothingToCompact, UsageError
from genbuffer.settings import Settings
from genbuffer.validator import Issue, Validation, size_issue, validate

__all__ = [
    "CRASH_POINTS",
    "CompactionConfig",
    "CompactionRequest",
    "CompactionResult",
    "assemble_and_persist",
]

CRASH_POINTS = ("after_snapshot", "after_update", "before_commit", "after_commit", "before_ack")


@dataclass(frozen=True)
class CompactionConfig:
    """The settings compaction reads, resolved once."""

    strict: bool = False
    max_bytes: int = 256 * 1024 * 1024
    schema: dict[str, Any] | None = None
    backup_chunks: bool = True
    audit_log: Path = Path("storage/logs/metadata-validation.log")
    crash_at: str | None = None

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
            crash_at=settings.genbuffer_crash_at,
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
    message: str = ""


class _Abort(Exception):
    """Leaves the row transaction so that it rolls back."""


def _crash(config: CompactionConfig, point: str) -> None:
    """Test hook: die here without any clean-up, as kill -9 would."""
    if config.crash_at == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _buffer_record(metadata: Any) -> tuple[str, int] | None:
    """(stream id, chunks of it persisted) from `metadata.buffer`, if genbuf wrote one."""
    if not isinstance(metadata, dict):
        return None
    record = metadata.get("buffer")
    if not isinstance(record, dict):
        return None
    stream, offset = record.get("stream_id"), record.get("offset")
    if isinstance(stream, str) and isinstance(offset, int) and not isinstance(offset, bool):
        return stream, offset
    return None


def _existing_artifact(row: GenerationRow) -> bytes:
    """The bytes the row already holds; refuse an artifact genbuf cannot account for."""
    legacy = isinstance(row.metadata, dict) and "compacted" in row.metadata
    if row.compacted is None and not legacy:
        return b""
    hint = "run `genbuf migrate-compacted-from-metadata` first" if legacy else None
    if _buffer_record(row.metadata) is None or row.compacted is None:
        raise ForeignArtifact(
            f"generation {row.id} already holds an artifact that genbuf did not write",
            hint=hint or "it was compacted by another tool; nothing was changed",
        )
    try:
        data = base64.b64decode(row.compacted, validate=True)
    except (binascii.Error, ValueError):
        raise ForeignArtifact(f"generation {row.id}: compacted is not valid base64") from None
    expected = row.metadata.get("sha256")
    if expected != hashlib.sha256(data).hexdigest():
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
    for page in buffer.read(snapshot, start, snapshot.end):
        chunks.extend(page)
        size += sum(len(chunk) for chunk in page)
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
    strict = config.strict if request.strict is None else request.strict
    mode = "strict" if strict else "soft"
    now = datetime.now(UTC)
    outcome: dict[str, Any] = {}
    try:
        with repository.transaction() as tx:
            outcome = _compact_locked(request, tx, buffer, config, mode, now)
            if outcome["abort"] or request.dry_run:
                raise _Abort
            _crash(config, "before_commit")
    except _Abort:
        pass
    _crash(config, "after_commit")
    validation: Validation = outcome["validation"]
    issues = [issue.as_dict() for issue in validation.issues]
    validation_id = outcome.get("validation_id")
    if outcome["abort"] and validation.issues and not request.dry_run:
        with repository.transaction() as tx:
            validation_id = tx.insert_issue(
                organization_id=request.organization_id,
                generation_id=request.generation_id,
                mode=mode,
                source=request.source,
                errors=issues,
                created_at=now,
            )
    if validation_id is not None:
        append_audit_line(
            config.audit_log,
            audit_record(
                validation_id=validation_id,
                organization_id=request.organization_id,
                generation_id=request.generation_id,
                mode=mode,
                source=request.source,
                errors=issues,
                ts=now,
            ),
        )
    deleted, left = False, None
    persisted = outcome["persist"] and not request.dry_run
    if request.delete and not request.dry_run and not outcome["abort"] and outcome["stream"]:
        _crash(config, "before_ack")
        _, deleted, left = buffer.acknowledge(
            outcome["key"], outcome["stream"], outcome["end"], delete=True
        )
    lost = any(
        issue.code == "chunk_count_mismatch" and issue.severity == "error"
        for issue in validation.issues
    )
    return CompactionResult(
        ok=not outcome["abort"] and not lost,
        persisted=persisted,
        organization_id=request.organization_id,
        generation_id=request.generation_id,
        scenario_id=outcome["scenario_id"],
        key=outcome["key"],
        chunk_count=outcome["chunk_count"],
        bytes=outcome["bytes"],
        validation_id=validation_id,
        issues=issues,
        deleted=deleted,
        mode=mode,
        dry_run=request.dry_run,
        new_chunks=outcome["new_chunks"],
        chunks_left=left,
        sha256=outcome["sha256"],
        message=_message(outcome, persisted, deleted, lost, request.dry_run),
    )


def _message(
    outcome: dict[str, Any], persisted: bool, deleted: bool, lost: bool, dry_run: bool
) -> str:
    if outcome["abort"]:
        return outcome["abort_reason"]
    parts = []
    if dry_run:
        parts.append(f"dry run: would persist {outcome['new_chunks']} new chunks")
    elif persisted:
        parts.append(f"persisted {outcome['new_chunks']} new chunks")
    else:
        parts.append("already up to date")
    if lost:
        parts.append("chunks were lost before compaction (see issues)")
    if deleted:
        parts.append("buffer deleted")
    return "; ".join(parts)


def _compact_locked(
    request: CompactionRequest,
    tx: Transaction,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    mode: str,
    now: datetime,
) -> dict[str, Any]:
    """Everything that happens while the row is locked; returns what the caller needs."""
    row = tx.lock_generation(request.generation_id)
    if row is None or row.organization_id != request.organization_id:
        raise GenerationNotFound(
            f"no generation {request.generation_id} for organization {request.organization_id}"
        )
    scenario_id = request.scenario_id if request.scenario_id is not None else row.scenario_id
    key = buffer.key_for(request.organization_id, request.generation_id, scenario_id)
    snapshot = buffer.snapshot(key)
    if not snapshot.exists:
        raise NothingToCompact(
            f"nothing to compact: no Redis buffer at {key}",
            hint="check the ids, --scenario-id and REDIS_PREFIX",
        )
    _crash(config, "after_snapshot")
    existing = _existing_artifact(row)
    record = _buffer_record(row.metadata)
    stream = snapshot.stream_id
    done = record[1] if record is not None and record[0] == stream else 0
    start = max(done, snapshot.trimmed)
    budget = config.max_bytes - len(existing)
    new_chunks, new_size, over = _read_new_chunks(buffer, snapshot, start, budget)
    total_size = len(existing) + new_size
    outcome: dict[str, Any] = {
        "key": key,
        "scenario_id": scenario_id,
        "stream": stream,
        "end": snapshot.end,
        "new_chunks": len(new_chunks),
        "chunk_count": (row.chunk_count or 0) + len(new_chunks),
        "bytes": total_size,
        "sha256": None,
        "abort": False,
        "persist": False,
        "abort_reason": "",
    }
    if over:
        issue = size_issue(total_size, config.max_bytes)
        outcome.update(
            validation=Validation((issue,) if issue else ()),
            abort=True,
            abort_reason=f"aborted: over GENERATION_MAX_BYTES ({config.max_bytes} bytes)",
        )
        return outcome
    content = existing + b"".join(new_chunks)
    validation = validate(
        content,
        counted_chunks=snapshot.counted,
        present_chunks=snapshot.end,
        row_metadata=row.metadata,
        schema=config.schema,
    )
    outcome["validation"] = validation
    outcome["sha256"] = hashlib.sha256(content).hexdigest()
    if not new_chunks:
        if existing or start > 0:
            return outcome  # up to date: nothing to write, maybe something to acknowledge
        if validation.has_errors and snapshot.counted:
            outcome.update(abort=True, abort_reason="nothing left to compact: chunks were lost")
            outcome["validation"] = Validation(
                tuple(i for i in validation.issues if i.code == "chunk_count_mismatch")
            )
            return outcome
        raise NothingToCompact(f"nothing to compact: the buffer at {key} holds no chunks")
    if mode == "strict" and validation.has_errors:
        outcome.update(abort=True, abort_reason="strict validation failed: nothing persisted")
        return outcome
    if request.dry_run:
        return outcome
    validation_id = None
    issues = [issue.as_dict() for issue in validation.issues]
    if issues:
        validation_id = tx.insert_issue(
            organization_id=request.organization_id,
            generation_id=request.generation_id,
            mode=mode,
            source=request.source,
            errors=issues,
            created_at=now,
        )
    tx.save_compaction(
        request.generation_id,
        _row_values(
            row, content, validation, validation_id, snapshot, request, now, issues,
            chunk_count=outcome["chunk_count"],
        ),
    )
    if config.backup_chunks:
        tx.backup_chunks(
            request.organization_id, request.generation_id, row.chunk_count or 0, new_chunks
        )
    _crash(config, "after_update")
    outcome.update(persist=True, validation_id=validation_id)
    return outcome


def _row_values(
    row: GenerationRow,
    content: bytes,
    validation: Validation,
    validation_id: int | None,
    snapshot: BufferSnapshot,
    request: CompactionRequest,
    now: datetime,
    issues: list[dict[str, str]],
    *,
    chunk_count: int,
) -> dict[str, Any]:
    """The column values of a compacted row; metadata keeps everything but the blob."""
    metadata: dict[str, Any]
    if isinstance(row.metadata, dict):
        metadata = {k: v for k, v in row.metadata.items() if k != "compacted"}
    else:
        metadata = {} if row.metadata is None else {"previous_metadata": row.metadata}
    metadata.update(
        chunk_count=chunk_count,
        compacted_at=now.isoformat(),
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        buffer={"stream_id": snapshot.stream_id, "offset": snapshot.end},
    )
    if issues:
        metadata["validation_errors"] = issues
    else:
        metadata.pop("validation_errors", None)
    values: dict[str, Any] = {
        "compacted": base64.b64encode(content).decode("ascii"),
        "llm_response": validation.llm_response,
        "metadata": metadata,
        "chunk_count": chunk_count,
        "compacted_at": now,
        "compacted_by": request.compacted_by,
        "updated_at": now,
    }
    if validation_id is not None:
        values["last_validation_issue_id"] = validation_id
    return values

