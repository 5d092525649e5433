"""emit-validation-test: write one synthetic issue row and audit line, end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from genbuffer.compaction.audit import IssueRecord, check_appendable
from genbuffer.db.repository import Repository
from genbuffer.documents import Document

__all__ = ["EmitResult", "emit_validation_test"]

TEST_ISSUE = {
    "code": "validation_test",
    "message": "synthetic issue written by genbuf emit-validation-test",
    "severity": "warning",
}


class EmitResult(Document):
    """What `emit-validation-test --json` prints."""

    ok: bool = True

    validation_id: int
    organization_id: int | None
    generation_id: int
    mode: str
    source: str
    log: str


def emit_validation_test(
    repository: Repository,
    audit_log: Path,
    generation_id: int,
    organization_id: int | None = None,
    strict: bool = False,
) -> EmitResult:
    """Insert a `metadata_validation_issues` row (source `debug`), then its JSONL line."""
    now = datetime.now(UTC)
    mode = "strict" if strict else "soft"
    errors = [dict(TEST_ISSUE)]
    record = IssueRecord(organization_id, generation_id, mode, "debug", errors, now)
    check_appendable(audit_log)  # (the row and its line, or neither)
    with repository.transaction() as tx:
        validation_id = record.insert(tx)
    record.log(audit_log, validation_id)
    return EmitResult(
        validation_id=validation_id,
        organization_id=organization_id,
        generation_id=generation_id,
        mode=mode,
        source="debug",
        log=str(audit_log),
    )
