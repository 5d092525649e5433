"""The outcome of a compaction, as `compact-generation --json` prints it, and its line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genbuffer.documents import Document
from genbuffer.states import LateOutcome, LateRule

if TYPE_CHECKING:
    from genbuffer.compaction.apply import Applied
    from genbuffer.compaction.plan import Plan
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.states import ValidationMode

__all__ = ["CompactionResult", "result_of", "summary"]

RULE_REASONS = {
    LateRule.FINISHED: ": its stream was marked finished (GENERATION_REGENERATION)",
    LateRule.JSON_CONTINUES: ": together they parse as one JSON document",
    LateRule.JSON_NEW_DOCUMENT: ": the new chunks parse alone, together they do not",
    LateRule.LATE_CHUNKS_SETTING: ": neither parses as JSON (GENERATION_LATE_CHUNKS)",
}
VERBS = {  # (applied, planned only)
    LateOutcome.REPLACED: ("replaced", "would replace"),
    LateOutcome.APPENDED: ("appended to", "would append to"),
}


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


def result_of(
    request: CompactionRequest, plan: Plan, *, mode: ValidationMode, applied: Applied | None
) -> CompactionResult:
    """The result of ``plan``: ``applied`` says what applying it did (None: a dry run)."""
    done = applied is not None
    persisted = done and plan.persists
    attempts = 0 if applied is None else applied.attempts
    quarantined = applied is not None and applied.quarantined
    return CompactionResult(
        ok=plan.stop is None and not plan.lost_chunks,
        persisted=persisted,
        organization_id=request.organization_id,
        generation_id=request.generation_id,
        scenario_id=plan.scenario_id,
        key=plan.key,
        chunk_count=plan.chunk_count,
        bytes=plan.size,
        validation_id=None if applied is None else applied.validation_id,
        issues=[issue.as_dict() for issue in plan.validation.issues],
        deleted=applied is not None and applied.deleted,
        mode=mode,
        dry_run=not done,
        new_chunks=plan.new_chunks,
        chunks_left=None if applied is None else applied.chunks_left,
        sha256=plan.sha256,
        attempts=attempts,
        quarantined=quarantined,
        stream_id=plan.stream,
        stream_end=plan.end,
        regenerated=plan.regenerated,
        history_id=None if applied is None else applied.history_id,
        announced=applied is not None and applied.announced,
        message=summary(plan, applied)
        + (f"; quarantined after {attempts} failed attempts" if quarantined else ""),
    )


def summary(plan: Plan, applied: Applied | None) -> str:
    """The one-line summary of a compaction (``applied`` None: a dry run), as the CLI
    prints it."""
    if plan.stop is not None:
        return plan.stop.reason
    if applied is None and plan.new_chunks:
        parts = [f"dry run: would persist {_chunks(plan.new_chunks)}"]
    elif applied is not None and plan.persists:
        parts = [f"persisted {_chunks(plan.new_chunks)}"]
    else:
        parts = ["already compacted: nothing new"]
    if plan.regenerated is not None:
        verb = VERBS[plan.regenerated][applied is None]
        history_id = None if applied is None else applied.history_id
        kept = f" (kept as history {history_id})" if history_id else ""
        why = RULE_REASONS.get(plan.late_rule, "") if plan.late_rule else ""
        parts.append(f"a new stream {verb} the previous artifact{kept}{why}")
    if plan.note:
        parts.append(plan.note)
    if plan.lost_chunks:
        parts.append("chunks were lost before compaction (see issues)")
    if applied is not None and applied.deleted:
        parts.append("buffer deleted")
    return "; ".join(parts)


def _chunks(count: int) -> str:
    return f"{count} new chunk{'' if count == 1 else 's'}"
