"""What a compaction stores besides the artifact: the row's other columns, the ledger
row, the issue row and audit line. Pure: values in, values out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from genbuffer.compaction.audit import IssueRecord

if TYPE_CHECKING:
    from genbuffer.compaction.placement import RowRecord
    from genbuffer.compaction.plan import Plan
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.db.rows import GenerationRow
    from genbuffer.objects.artifact import OffloadRecord
    from genbuffer.states import LedgerResult, ValidationMode

__all__ = ["issue_record", "ledger_entry", "row_values", "slices"]

LEDGER_MESSAGE_MAX = 255  # generation_compactions.message
SOURCE = "compaction"  # the issue row's source (emit-validation-test writes "debug")


def issue_record(
    request: CompactionRequest, mode: ValidationMode, issues: list[dict[str, str]], now: datetime
) -> IssueRecord:
    """The issue row and audit line of one validation."""
    return IssueRecord(
        request.organization_id, request.generation_id, mode, SOURCE, list(issues), now
    )


def ledger_entry(
    request: CompactionRequest,
    plan: Plan | None,
    *,
    result: LedgerResult,
    mode: ValidationMode,
    now: datetime,
    message: str | None = None,
) -> dict[str, object]:
    """One `generation_compactions` row (``plan`` None: the compaction failed before
    it had one)."""
    errors = 0
    lag = None
    if plan is not None:
        errors = sum(1 for issue in plan.validation.issues if issue.severity == "error")
        if plan.last_chunk_at is not None:
            lag = max(0.0, (now - plan.last_chunk_at).total_seconds())
    return {
        "organization_id": request.organization_id,
        "generation_id": request.generation_id,
        "result": result,
        "mode": mode,
        "chunk_count": None if plan is None else plan.chunk_count,
        "bytes": None if plan is None else plan.size,
        "lag_seconds": lag,
        "errors": errors,
        "message": message[:LEDGER_MESSAGE_MAX] if message else None,
        "late_chunks": None if plan is None else plan.regenerated,
        "late_rule": None if plan is None else plan.late_rule,
        "created_at": now,
    }


def slices(content: bytes, start: int, sizes: list[int] | tuple[int, ...]) -> Iterator[memoryview]:
    """The chunks again, as views into the joined bytes (no copies)."""
    view = memoryview(content)
    for size in sizes:
        yield view[start : start + size]
        start += size


def row_values(
    row: GenerationRow,
    plan: Plan,
    record: RowRecord,
    *,
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
                "reason": plan.regenerated,
                "rule": plan.late_rule,
                "sha256": previous.get("sha256"),
                "bytes": previous.get("bytes"),
                "chunk_count": row.chunk_count,
                "at": now.isoformat(),
            },
        ]
    metadata.update(
        chunk_count=plan.chunk_count,
        compacted_at=now.isoformat(),
        bytes=plan.size,
        sha256=plan.sha256,
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
        "chunk_count": plan.chunk_count,
        "compacted_at": now,
        "compacted_by": compacted_by,
        "updated_at": now,
        "last_validation_issue_id": validation_id
        if validation_id is not None
        else row.last_validation_issue_id,
    }
