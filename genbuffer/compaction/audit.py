"""The JSONL audit log: one JSON object a line for each validation with issues."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genbuffer.errors import OperationFailed

if TYPE_CHECKING:
    from genbuffer.db.repository import Transaction

__all__ = ["IssueRecord", "append_audit_line", "audit_record", "check_appendable"]


def audit_record(
    *,
    validation_id: int,
    organization_id: int | None,
    generation_id: int,
    mode: str,
    source: str,
    errors: list[dict[str, Any]],
    ts: datetime,
) -> dict[str, Any]:
    """The audit line's fields, in the contract's order."""
    return {
        "ts": ts.isoformat(),
        "validation_id": validation_id,
        "organization_id": organization_id,
        "generation_id": generation_id,
        "mode": mode,
        "source": source,
        "errors": errors,
    }


def append_audit_line(path: Path, record: dict[str, Any]) -> None:
    """Append one line with a single O_APPEND write, so concurrent writers never interleave.

    The log is never written through a symlink (O_NOFOLLOW): a link planted where the
    log goes must not turn audit lines into writes to another file.
    """
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    _append(path, line, "")


def check_appendable(path: Path) -> None:
    """Open the audit log for appending (creating it, and its directory, as the first
    line would) and write nothing: an OperationFailed before any row is written, where
    a line refused after the row's COMMIT could not be written again (a re-run finds
    the generation compacted)."""
    _append(path, b"", "; nothing was written")


def _append(path: Path, data: bytes, said: str) -> None:
    """Open without waiting (O_NONBLOCK): a named pipe no process reads is refused
    (ENXIO) where a plain open waits for a reader forever, before every compaction; one
    with a reader gets the line as before, written blocking."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o640)
        try:
            if data:
                os.set_blocking(fd, True)
                os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        reasons = {
            errno.ELOOP: "it is a symlink",
            errno.ENXIO: "it is a named pipe no process reads",
        }
        reason = reasons.get(exc.errno or 0, exc.strerror)
        raise OperationFailed(
            f"cannot write the audit log {path}: {reason}{said}",
            hint="check METADATA_VALIDATION_LOG (a regular file genbuf may append to)",
        ) from None


@dataclass(frozen=True)
class IssueRecord:
    """One validation with issues: written as a `metadata_validation_issues` row and a line."""

    organization_id: int | None
    generation_id: int
    mode: str
    source: str
    errors: list[dict[str, Any]]
    ts: datetime

    def insert(self, tx: Transaction) -> int:
        """Insert the issue row in ``tx``; returns its id (the validation id)."""
        return tx.insert_issue(
            organization_id=self.organization_id,
            generation_id=self.generation_id,
            mode=self.mode,
            source=self.source,
            errors=self.errors,
            created_at=self.ts,
        )

    def log(self, path: Path, validation_id: int) -> None:
        """Append the audit line for the row ``validation_id``."""
        append_audit_line(
            path,
            audit_record(
                validation_id=validation_id,
                organization_id=self.organization_id,
                generation_id=self.generation_id,
                mode=self.mode,
                source=self.source,
                errors=self.errors,
                ts=self.ts,
            ),
        )
