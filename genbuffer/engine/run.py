"""run_one: one compaction run by the engine, and what it came to.

The one place an exception of a compaction becomes an outcome (``Outcome``), for the
worker and compact-pending alike: an outage (Redis or the database unreachable) is
not an outcome but raised, so that the caller stops (compact-pending) or pauses (the
worker); whatever else goes wrong is one generation's failure, never the run's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from genbuffer.compaction import (
    CompactionConfig,
    CompactionRequest,
    CompactionResult,
    assemble_and_persist,
)
from genbuffer.compaction.run import assemble_and_persist_many
from genbuffer.db.repository import Repository
from genbuffer.errors import (
    DependencyUnavailable,
    GenbufferError,
    GenerationNotFound,
    NothingToCompact,
)
from genbuffer.redis import GenerationBuffer
from genbuffer.states import Outcome

__all__ = ["BATCH", "Engine", "Job", "Ran", "one_line", "outcome_of"]

ERROR_LINE = 300  # characters of an unexpected error kept in its one line
BATCH = 8  # compactions in one transaction at most (run_many), as a run hands them out


@dataclass(frozen=True)
class Job:
    """One buffer to compact: its ids, its chunks key when a scan or an event named it
    (used as it is: no lookup), and why it was chosen (finished, idle or at_risk)."""

    organization_id: int
    generation_id: int
    scenario_id: int | None
    key: str | None = None
    why: str | None = None


@dataclass(frozen=True)
class Ran:
    """What one compaction came to: its outcome, and the result when it ran to the end
    (``message`` says why otherwise)."""

    outcome: Outcome
    request: CompactionRequest
    result: CompactionResult | None = None
    message: str = ""
    # orphaned: whether this run set the buffer aside (a second run finds it set aside
    # already, and compact-pending reports an orphan once)
    first_report: bool = True
    seconds: float = 0.0  # how long it took

    @property
    def ok(self) -> bool:
        """Whether the compaction is clean: no failure, no orphan, no loss found."""
        if self.result is not None:
            return self.result.ok
        return self.outcome == Outcome.NEEDLESS

    @property
    def owed_ack(self) -> tuple[str, str, int] | None:
        """(key, stream id, end) when the row holds the buffer and the caller trims it
        (``request.acknowledge`` False: compact-pending batches its acknowledgements)."""
        result, request = self.result, self.request
        if result is None or request.acknowledge or not request.delete or request.dry_run:
            return None
        if not result.stream_id or not (result.ok or result.persisted):
            return None
        return result.key, result.stream_id, result.stream_end


def outcome_of(result: CompactionResult) -> Outcome:
    """The outcome of a compaction that ran to the end (``result.ok`` says if it is clean)."""
    if result.persisted:
        return Outcome.COMPACTED  # (not ok when chunks were lost before it: written anyway)
    if not result.ok:
        return Outcome.FAILED
    if result.new_chunks == 0:
        return Outcome.ALREADY_PERSISTED
    return Outcome.COMPACTED  # a dry run: what it would write


def one_line(error: BaseException) -> str:
    """An unexpected error as one line: its type and its first ``ERROR_LINE`` characters."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:ERROR_LINE]}"


class Engine:
    """Compactions of one run: its adapters, its settings, and the switches every
    compaction of the run shares (``request`` builds each one's)."""

    def __init__(
        self,
        buffer: GenerationBuffer,
        repository: Repository,
        config: CompactionConfig,
        *,
        delete: bool = True,
        dry_run: bool = False,
        acknowledge: bool = True,
        regeneration: str | None = None,
        compacted_by: str = "genbuf",
    ) -> None:
        self.buffer = buffer
        self.repository = repository
        self.config = config
        self.delete = delete
        self.dry_run = dry_run
        self.acknowledge = acknowledge
        self.regeneration = regeneration
        self.compacted_by = compacted_by

    def request(self, job: Job) -> CompactionRequest:
        """The compaction of ``job`` with this run's switches; the key is the one the job
        names (or the one scenario_id names), never another template's."""
        return CompactionRequest(
            job.organization_id,
            job.generation_id,
            job.scenario_id,
            delete=self.delete,
            dry_run=self.dry_run,
            acknowledge=self.acknowledge,
            exact_key=True,
            key=job.key,
            selected=job.why,
            regeneration=self.regeneration,
            compacted_by=self.compacted_by,
        )

    def run_one(self, request: CompactionRequest) -> Ran:
        """Run one compaction; what it came to. Raises only DependencyUnavailable (an
        outage: nothing to hold against the generation)."""
        started = time.perf_counter()
        try:
            result: CompactionResult | Exception = assemble_and_persist(
                request, buffer=self.buffer, repository=self.repository, config=self.config
            )
        except DependencyUnavailable:
            raise
        except Exception as error:  # one bad generation must not stop the run
            result = error
        return replace(self._ran(request, result), seconds=time.perf_counter() - started)

    def run_many(self, requests: Sequence[CompactionRequest]) -> list[Ran | DependencyUnavailable]:
        """Run compactions of distinct generations in one transaction (fewer round trips
        and commits a compaction), each coming to what ``run_one`` would make of it; an
        outage is that compaction's, not raised. When the batch's transaction is rolled
        back (a database error, an outage), each runs again on its own."""
        # a generation named twice (an event and a sweep): the second runs after, alone
        first: dict[int, int] = {}  # generation id: its first request's index
        for index, request in enumerate(requests):
            first.setdefault(request.generation_id, index)
        batch = list(first.values())
        ran = dict(zip(batch, self._batch([requests[i] for i in batch]), strict=True))
        return [
            ran[index] if index in ran else self._one(request)
            for index, request in enumerate(requests)
        ]

    def _batch(self, requests: list[CompactionRequest]) -> list[Ran | DependencyUnavailable]:
        if len(requests) < 2 or self.dry_run:
            return [self._one(request) for request in requests]
        started = time.perf_counter()
        try:
            results = assemble_and_persist_many(
                requests, buffer=self.buffer, repository=self.repository, config=self.config
            )
        except Exception:  # nothing of the batch was written: each on its own
            return [self._one(request) for request in requests]
        seconds = (time.perf_counter() - started) / len(requests)
        ran: list[Ran | DependencyUnavailable] = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, DependencyUnavailable):
                ran.append(result)
                continue
            try:
                ran.append(replace(self._ran(request, result), seconds=seconds))
            except DependencyUnavailable as outage:  # setting an orphan aside
                ran.append(outage)
        return ran

    def _one(self, request: CompactionRequest) -> Ran | DependencyUnavailable:
        try:
            return self.run_one(request)
        except DependencyUnavailable as outage:
            return outage

    def _ran(self, request: CompactionRequest, result: CompactionResult | Exception) -> Ran:
        """What a compaction's result, or the error it raised, comes to."""
        if isinstance(result, CompactionResult):
            return Ran(outcome_of(result), request, result, message=result.message)
        if isinstance(result, NothingToCompact):  # compacted and deleted before: a duplicate
            return Ran(Outcome.NEEDLESS, request, message=result.message)
        if isinstance(result, GenerationNotFound):
            try:
                first = self._set_aside(request, result.message)
            except DependencyUnavailable:
                raise
            except Exception as error:  # a buffer Redis refuses to mark (a hostile meta)
                return Ran(Outcome.FAILED, request, message=f"{result.message}; {one_line(error)}")
            return Ran(Outcome.ORPHANED, request, message=result.message, first_report=first)
        if isinstance(result, GenbufferError):  # an attempt counted; a later run tries again
            return Ran(Outcome.FAILED, request, message=result.message)
        return Ran(Outcome.FAILED, request, message=one_line(result))

    def _set_aside(self, request: CompactionRequest, message: str) -> bool:
        """Mark the buffer of a generation that has no row orphaned (not in a dry run);
        whether it was not marked before."""
        if request.dry_run:
            return True
        key = request.key or self.buffer.read_key_for(
            request.organization_id, request.generation_id, request.scenario_id
        )
        return self.buffer.protocol.mark_orphaned(key, message)
