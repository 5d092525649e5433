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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from genbuffer.compaction import apply
from genbuffer.compaction.apply import Counting, Failed, Settling, Written
from genbuffer.compaction.audit import check_appendable
from genbuffer.compaction.plan import Content, Planned, absent, decide
from genbuffer.compaction.read import read
from genbuffer.compaction.result import CompactionResult, result_of
from genbuffer.compaction.validate import check
from genbuffer.errors import (
    DependencyUnavailable,
    GenbufferError,
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
    from genbuffer.redis.layout import MetaRead
    from genbuffer.states import ValidationMode

__all__ = ["assemble_and_persist", "assemble_and_persist_many"]

COMPACTED_BY_MAX = 255  # the column's length


def assemble_and_persist(
    request: CompactionRequest,
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
) -> CompactionResult:
    """Compact one generation's buffer into its `scenario_generations` row."""
    _check(request)
    if not request.options.dry_run:
        check_appendable(config.audit_log)
    with repository.transaction() as tx:
        step = _prepare(tx, request, buffer, config, datetime.now(UTC))
        if step.error is not None:
            raise step.error
        if step.writes:
            config.faults.at("before_commit")
            # a COMMIT whose reply is lost: look on a fresh connection before going on
            tx.verify_commit_with(step.commit_check(repository))
    (outcome,) = _settle([step], buffer=buffer, repository=repository, config=config)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def assemble_and_persist_many(
    requests: Sequence[CompactionRequest],
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
) -> list[CompactionResult | Exception]:
    """Compact several generations (distinct, not dry runs) in one transaction: the
    rows locked in id order, each buffer read, validated, planned and written as
    ``assemble_and_persist`` does, one COMMIT; then each settled. What one generation
    comes to (its result, or the error ``assemble_and_persist`` would raise) does not
    stop the others'. A database error, an outage or a setting refused is raised: the
    transaction is rolled back whole, nothing is written or told, and the caller runs
    each on its own."""
    if len({request.generation_id for request in requests}) != len(requests) or any(
        request.options.dry_run for request in requests
    ):
        raise UsageError("a batch of compactions takes distinct generations, none a dry run")
    for request in requests:
        _check(request)
    check_appendable(config.audit_log)
    now = datetime.now(UTC)
    ordered = sorted(requests, key=lambda request: request.generation_id)  # no deadlock
    with repository.transaction() as tx:
        locked = tx.lock_generations([request.generation_id for request in ordered])
        # the meta hashes read apart (a cluster's split lists), all in one trip per node
        known = buffer.protocol.read_metas([key for r in ordered if (key := _known_key(r))])
        steps = [
            _prepare(tx, request, buffer, config, now, locked=locked, known=known)
            for request in ordered
        ]
        writing = [step for step in steps if step.writes]
        if writing:
            config.faults.at("before_commit")
            # one COMMIT for all: the first row tells whether it was applied
            tx.verify_commit_with(writing[0].commit_check(repository))
    settled = _settle(steps, buffer=buffer, repository=repository, config=config)
    by_id = zip((step.request.generation_id for step in steps), settled, strict=True)
    outcomes = dict(by_id)
    return [outcomes[request.generation_id] for request in requests]


@dataclass(frozen=True)
class _Step:
    """One generation inside the row's transaction: read, planned and written (or the
    error that stopped it before any write)."""

    request: CompactionRequest
    mode: ValidationMode
    now: datetime
    key: str = ""  # the chunks key read
    # the plan (its bytes handed to the write, or dropped: a batch holds no artifact)
    planned: Planned | Failed | None = None
    written: Written = field(default_factory=Written)
    writes: bool = False  # the plan was written in the transaction
    error: Exception | None = None

    def commit_check(self, repository: Repository) -> Callable[[], bool]:
        """Whether a COMMIT whose reply was lost applied this step's write."""
        planned = self.planned
        assert isinstance(planned, Planned)  # (only a step that writes is asked)
        return lambda: apply.committed(repository, self.request, planned.plan)


def _check(request: CompactionRequest) -> None:
    length = len(request.compacted_by)
    if not 0 < length <= COMPACTED_BY_MAX:
        said = "is empty" if length == 0 else f"is {length} characters"
        raise UsageError(
            f"compacted_by (--by) {said}: the column takes 1 to {COMPACTED_BY_MAX}",
            hint="give a short name of who or what compacts: a person, a job, a host "
            "(e.g. --by cron@web1); the default is genbuf",
        )


def _known_key(request: CompactionRequest) -> str | None:
    """The chunks key a request names (a worker's event, compact-pending's scan)."""
    found = request.found
    return None if found is None else found.key


def _prepare(
    tx: Transaction,
    request: CompactionRequest,
    buffer: GenerationBuffer,
    config: CompactionConfig,
    now: datetime,
    *,
    locked: dict[int, GenerationRow] | None = None,
    known: Mapping[str, MetaRead] | None = None,
) -> _Step:
    """Lock the row, read, plan and (unless a dry run or a stop) write. Alone (no
    ``locked``, the batch's rows locked before) the transaction is this generation's,
    ended at once when nothing is written, and an error is raised. In a batch an error
    before the write is the step's (the reads and the plan write nothing), while a
    database error or an outage is raised: the batch's transaction is rolled back
    whole."""
    alone = locked is None
    mode = config.mode(request.options.strict)
    step = _Step(request, mode, now)
    try:
        row = _locked_row(tx, request, locked)
        lease = not request.options.dry_run
        source = read(request, row, buffer, config, lease=lease, now=now, known=known)
        planned = _plan(source, request, buffer, config, mode=mode)
    except DependencyUnavailable:
        raise
    except GenbufferError as error:
        if alone:
            raise
        return replace(step, error=error)
    step = replace(step, key=source.key, planned=planned)
    if request.options.dry_run or isinstance(planned, Failed) or planned.plan.stop is not None:
        if isinstance(planned, Planned):
            planned.content.take()  # (not written: not held while the batch goes on)
        if alone:
            tx.rollback()
        return step
    plan, content = planned
    written = apply.write(tx, request, row, plan, content, mode=mode, now=now, config=config)
    return replace(step, written=written, writes=True)


def _settle(
    steps: list[_Step],
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
) -> list[CompactionResult | Exception]:
    """After the transaction, for each step: its error, a dry run's result, a failure
    counted (its error), or the plan settled (told, trimmed, counted; the events and
    trims of all in one round trip)."""
    outcomes: list[CompactionResult | Exception | None] = [None] * len(steps)
    settling: list[tuple[int, Settling]] = []
    for index, step in enumerate(steps):
        try:
            done = _committed(step, buffer=buffer, repository=repository, config=config)
        except Exception as error:  # this generation's, raised as assemble_and_persist's
            outcomes[index] = error
            continue
        if isinstance(done, Settling):
            settling.append((index, done))
        else:
            outcomes[index] = done
    items = [item for _, item in settling]
    applied = apply.settle_many(items, buffer=buffer, repository=repository, config=config)
    for (index, item), settled in zip(settling, applied, strict=True):
        outcomes[index] = (
            settled
            if isinstance(settled, Exception)
            else result_of(item.request, item.plan, mode=item.mode, applied=settled)
        )
    return [outcome for outcome in outcomes if outcome is not None]


def _committed(
    step: _Step,
    *,
    buffer: GenerationBuffer,
    repository: Repository,
    config: CompactionConfig,
) -> CompactionResult | Settling:
    """A step once its transaction ended: its error raised, a dry run's result, a
    failure counted and raised, or what is left to settle."""
    if step.error is not None:
        raise step.error
    request, planned, mode, now = step.request, step.planned, step.mode, step.now
    assert planned is not None  # (else an error was raised)
    if request.options.dry_run:  # a plan that is not applied: nothing told, trimmed or counted
        if isinstance(planned, Failed):
            raise planned.error
        return result_of(request, planned.plan, mode=mode, applied=None)
    if isinstance(planned, Failed):  # after the row's transaction: SQLite has one writer
        apply.count_failure(
            planned,
            request,
            step.key,
            buffer=buffer,
            repository=repository,
            config=config,
            mode=mode,
            now=now,
        )
        raise planned.error
    config.faults.at("after_commit")
    return Settling(request, planned.plan, step.written, mode, now)


def _locked_row(
    tx: Transaction, request: CompactionRequest, locked: dict[int, GenerationRow] | None
) -> GenerationRow:
    """The generation's row, locked until the transaction ends (GenerationNotFound);
    ``locked``: the rows a batch locked."""
    if locked is None:
        row = tx.lock_generation(request.generation_id)
    else:
        row = locked.get(request.generation_id)
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
