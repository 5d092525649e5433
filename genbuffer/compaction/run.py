"""assemble_and_persist: read, validate, plan, apply, in that order, and only here.

Each step is a module of this package, and none of them calls back up::

    lock the row   one compactor at a time (SELECT … FOR UPDATE; SQLite: BEGIN IMMEDIATE)
    read           the buffer's snapshot: length + meta atomically, a TTL lease (read.py)
    validate       placed against the row; the artifact read once, checked (validate.py)
    plan           a value: what to write, trim, keep, or why to stop (plan.py)
    apply          the row written, COMMIT; then the ledger, the audit line, the
                   announcement, the trim of exactly the committed chunks, the
                   attempt count (apply.py)

A dry run takes a snapshot that writes nothing, plans, and applies nothing. A
compaction that raises while validating or planning (not an outage, a race or a
bad setting) is counted as a failed attempt: a generation that keeps failing is
quarantined after COMPACTION_MAX_ATTEMPTS, and refused until ``--force``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from genbuffer.compaction import apply
from genbuffer.compaction.apply import Counting, Failed, Written
from genbuffer.compaction.plan import Content, Planned, absent, decide
from genbuffer.compaction.read import read
from genbuffer.compaction.result import CompactionResult, result_of
from genbuffer.compaction.validate import check
from genbuffer.errors import (
    DependencyUnavailable,
    GenerationNotFound,
    ObjectRefused,
    StreamChanged,
    UsageError,
)

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.read import Source
    from genbuffer.compaction.request import CompactionRequest
    from genbuffer.db.repository import Repository
    from genbuffer.db.rows import GenerationRow
    from genbuffer.db.transaction import Transaction
    from genbuffer.redis import GenerationBuffer
    from genbuffer.states import ValidationMode

__all__ = ["assemble_and_persist"]

COMPACTED_BY_MAX = 255  # the column's length


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
    dry_run = request.options.dry_run
    mode = config.mode(request.options.strict)
    now = datetime.now(UTC)
    with repository.transaction() as tx:
        row = _locked_row(tx, request)
        source = read(request, row, buffer, config, lease=not dry_run, now=now)
        planned = _plan(source, request, buffer, config, mode=mode)
        written = Written()
        if dry_run or isinstance(planned, Failed) or planned.plan.stop is not None:
            tx.rollback()
        else:
            plan, content = planned
            written = apply.write(
                tx, request, row, plan, content, mode=mode, now=now, config=config
            )
            config.faults.at("before_commit")
            # a COMMIT whose reply is lost: look on a fresh connection before going on
            tx.verify_commit_with(lambda: apply.committed(repository, request, plan))
    if dry_run:  # a plan that is not applied: nothing told, trimmed or counted
        if isinstance(planned, Failed):
            raise planned.error
        return result_of(request, planned.plan, mode=mode, applied=None)
    if isinstance(planned, Failed):  # after the row's transaction: SQLite has one writer
        apply.count_failure(
            planned,
            request,
            source.key,
            buffer=buffer,
            repository=repository,
            config=config,
            mode=mode,
            now=now,
        )
        raise planned.error
    config.faults.at("after_commit")
    applied = apply.settle(
        request,
        planned.plan,
        written,
        buffer=buffer,
        repository=repository,
        config=config,
        mode=mode,
        now=now,
    )
    return result_of(request, planned.plan, mode=mode, applied=applied)


def _locked_row(tx: Transaction, request: CompactionRequest) -> GenerationRow:
    """The generation's row, locked until the transaction ends (GenerationNotFound)."""
    row = tx.lock_generation(request.generation_id)
    if row is None or row.organization_id != request.organization_id:
        raise GenerationNotFound(
            f"no generation {request.generation_id} for organization {request.organization_id}",
            hint="genbuf compacts into the app's row: scenario_generations needs the row "
            "(its id and organization_id) before the buffer is compacted; the buffer is kept",
        )
    return row


def _plan(
    source: Source,
    request: CompactionRequest,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    *,
    mode: ValidationMode,
) -> Planned | Failed:
    """Validate and plan. An error counted against the generation comes back as Failed;
    outages, races and bad settings are raised, never held against it."""
    if source.absence is not None:
        return Planned(absent(source), Content())
    regeneration = request.options.regeneration or config.regeneration
    try:
        checked = check(source, buffer, config, regeneration=regeneration)
        return decide(source, checked, request, config, mode=mode)
    except (DependencyUnavailable, StreamChanged, UsageError):
        raise
    except ObjectRefused as exc:
        # the ledger says it was refused (its message discloses nothing); not an attempt:
        # the next run refuses it the same way until the row or the settings change
        return Failed(exc, Counting.LEDGER)
    except Exception as exc:
        return Failed(exc, Counting.ATTEMPT)
