"""genbuf validation-report: validation issues over a period, and what strict mode
would have done (the question to answer before METADATA_VALIDATION_STRICT=true)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from pydantic import Field

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.states import LedgerResult

__all__ = ["CodeSummary", "ValidationReport", "validation_report"]

EXAMPLES = 5  # generation ids named per code


class CodeSummary(Document):
    """One issue code at one severity over the period."""

    code: str
    severity: str
    count: int
    generations: int  # distinct generations with it
    examples: list[int]  # some of their ids
    last_seen: datetime


class ValidationReport(Document):
    """What `validation-report --json` prints."""

    ok: bool = True
    since: datetime
    until: datetime
    issue_rows: int  # validations that found something
    by_mode: dict[str, int]
    codes: list[CodeSummary]
    per_day: dict[str, dict[str, int]]  # date → {rows, errors, warnings}
    compactions: dict[str, int] = Field(default_factory=dict)  # persisted (soft/strict), aborts
    strict_would_abort: int  # soft compactions with error issues: strict would have aborted
    strict_would_abort_ratio: float | None  # of the period's soft compactions


def validation_report(
    repository: Repository, since: timedelta, *, now: datetime | None = None
) -> ValidationReport:
    """Issues by code and severity since ``now - since``, per day, and strict's verdict."""
    now = now or datetime.now(UTC)
    start = now - since
    observations = repository.observations
    counts: Counter[tuple[str, str]] = Counter()
    generations: dict[tuple[str, str], set[int]] = defaultdict(set)
    examples: dict[tuple[str, str], list[int]] = defaultdict(list)
    last_seen: dict[tuple[str, str], datetime] = {}
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    modes: Counter[str] = Counter()
    rows = 0
    for generation_id, mode, errors, created_at in observations.issues(since=start):
        rows += 1
        modes[mode] += 1
        day = per_day[created_at.date().isoformat()]
        day["rows"] += 1
        for issue in errors:
            if not isinstance(issue, dict):
                continue
            key = (str(issue.get("code", "?")), str(issue.get("severity", "error")))
            counts[key] += 1
            day["errors" if key[1] == "error" else "warnings"] += 1
            # distinct generations per code: bounded by the period's issue rows
            generations[key].add(generation_id)
            if generation_id not in examples[key] and len(examples[key]) < EXAMPLES:
                examples[key].append(generation_id)
            if key not in last_seen or created_at > last_seen[key]:
                last_seen[key] = created_at
    soft, aborting = observations.strict_would_abort(start)
    ledger = observations.compactions(start)
    codes = [
        CodeSummary(
            code=code,
            severity=severity,
            count=count,
            generations=len(generations[(code, severity)]),
            examples=examples[(code, severity)],
            last_seen=last_seen[(code, severity)],
        )
        for (code, severity), count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return ValidationReport(
        since=start,
        until=now,
        issue_rows=rows,
        by_mode=dict(modes),
        codes=codes,
        per_day={
            day: {name: found[name] for name in ("rows", "errors", "warnings")}
            for day, found in sorted(per_day.items())
        },
        compactions={
            "soft_persisted": soft,
            **{result: ledger.get(result, 0) for result in LedgerResult},
        },
        strict_would_abort=aborting,
        strict_would_abort_ratio=round(aborting / soft, 4) if soft else None,
    )
