"""The states and outcomes genbuffer stores, prints and labels, as StrEnums.

Each member *is* its string (``StrEnum``): ledger rows, JSON output, log records and
metric labels carry exactly the text they carried as plain strings, and comparisons
with those strings hold. Named here, once, so a typo is an AttributeError rather than
a state nobody reaches.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BufferState",
    "LateOutcome",
    "LateRule",
    "LedgerResult",
    "Outcome",
    "Selected",
    "StopCause",
    "ValidationMode",
    "WorkerOutcome",
]


class BufferState(StrEnum):
    """Where a buffer stands. A meta hash alone says QUARANTINED, ORPHANED, FINISHED or
    OPEN (``BufferMeta.state``); status tells an open buffer STREAMING from IDLE
    (``genbuffer.engine.idleness``), and a buffer whose row does not exist ORPHANED."""

    STREAMING = "streaming"
    FINISHED = "finished"
    IDLE = "idle"
    QUARANTINED = "quarantined"
    ORPHANED = "orphaned"
    OPEN = "open"  # streaming or idle: the meta hash alone cannot tell


class Selected(StrEnum):
    """Why a scan chose a buffer for compaction (``genbuffer.engine.selection``): its stream is
    finished, it has been idle, or its chunks expire within GENERATION_EXPIRY_MARGIN
    (idle or not: compacted as a provisional artifact)."""

    FINISHED = "finished"
    IDLE = "idle"
    AT_RISK = "at_risk"


class LedgerResult(StrEnum):
    """The ledger's ``result`` of one compaction (``generation_compactions``)."""

    PERSISTED = "persisted"
    STRICT_ABORT = "strict_abort"
    FAILED = "failed"


class ValidationMode(StrEnum):
    """How a compaction counts validation errors: the ``mode`` of its ledger row, issue
    row and result."""

    STRICT = "strict"  # an error aborts: nothing is persisted
    SOFT = "soft"  # errors are recorded and the artifact persisted


class StopCause(StrEnum):
    """Why a compaction's plan stops without writing anything (exit 1)."""

    STRICT = "strict"  # strict validation found errors
    OVERSIZE = "oversize"  # over GENERATION_MAX_BYTES
    LOST = "lost"  # chunks were lost before any compaction could hold them
    DIVERGED = "diverged"  # the buffer does not hold what the row says it persisted

    @property
    def ledger_result(self) -> LedgerResult:
        """The ledger's ``result`` of a compaction stopped for this cause."""
        return LedgerResult.STRICT_ABORT if self is StopCause.STRICT else LedgerResult.FAILED


class LateOutcome(StrEnum):
    """How a new stream of a generation met the artifact its row holds."""

    APPENDED = "appended"
    REPLACED = "replaced"


class LateRule(StrEnum):
    """Why a new stream appended to, or replaced, the artifact its row holds (the
    ledger's ``late_rule``, the row's ``metadata.history[].rule``)."""

    FINISHED = "finished"  # the row's stream was marked finished: GENERATION_REGENERATION
    JSON_CONTINUES = "json_continues"  # artifact + new chunks parse as one JSON document
    JSON_NEW_DOCUMENT = "json_new_document"  # the new chunks parse alone, together they do not
    LATE_CHUNKS_SETTING = "late_chunks_setting"  # neither tells: GENERATION_LATE_CHUNKS


class Outcome(StrEnum):
    """What one compaction the engine ran came to (``genbuffer.engine.run.run_one``): the
    worker logs it as a record's ``outcome``, compact-pending counts it. Whether the
    result is clean (``ok``: no loss found) is told beside it."""

    COMPACTED = "compacted"  # the row took the buffer's new chunks (a dry run: would)
    # the row already held every chunk (a run killed between its commit and its trim):
    # nothing written, the buffer still to acknowledge
    ALREADY_PERSISTED = "already_persisted"
    NEEDLESS = "needless"  # nothing to compact: the buffer was gone or held no chunk
    ORPHANED = "orphaned"  # the generation's row does not exist
    FAILED = "failed"


class WorkerOutcome(StrEnum):
    """The ``outcome`` of a worker's log record."""

    COMPACTED = "compacted"
    NEEDLESS = "needless"  # nothing to compact (compacted and deleted before)
    ORPHANED = "orphaned"  # the generation's row does not exist
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the server did something else than deliver
    PARKED = "parked"  # a malformed event set aside
    OUTAGE = "outage"  # Redis or the database unreachable: the worker pauses
    ERROR = "error"  # anything else that paused the worker
