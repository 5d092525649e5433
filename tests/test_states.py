"""genbuffer.states: the StrEnums carry exactly the strings stored and printed before."""

from __future__ import annotations

import json

from genbuffer import states
from genbuffer.states import (
    BufferState,
    LateOutcome,
    LateRule,
    LedgerResult,
    Outcome,
    Selected,
    StopCause,
    ValidationMode,
    WorkerOutcome,
)

# the strings ledger rows, JSON output, log records and metric labels have always held
VALUES = {
    BufferState: ["streaming", "finished", "idle", "quarantined", "orphaned", "open"],
    Selected: ["finished", "idle", "at_risk"],
    LedgerResult: ["persisted", "strict_abort", "failed"],
    LateOutcome: ["appended", "replaced"],
    LateRule: ["finished", "json_continues", "json_new_document", "late_chunks_setting"],
    ValidationMode: ["strict", "soft"],
    StopCause: ["strict", "oversize", "lost", "diverged"],  # stored as its ledger_result
    Outcome: ["compacted", "already_persisted", "needless", "orphaned", "failed"],
    WorkerOutcome: [
        "compacted",
        "needless",
        "orphaned",
        "failed",
        "interrupted",
        "parked",
        "outage",
        "error",
    ],
}


def test_every_state_keeps_its_string() -> None:
    """Values, order, str(), f-strings and JSON (as value and as key) are the strings."""
    assert sorted(VALUES, key=lambda e: e.__name__) == sorted(
        (getattr(states, name) for name in states.__all__), key=lambda e: e.__name__
    )
    for enum, values in VALUES.items():
        assert [member.value for member in enum] == values
        for member, value in zip(enum, values, strict=True):
            assert member == value and hash(member) == hash(value)
            assert str(member) == f"{member}" == value
            assert json.dumps({member: [member]}) == json.dumps({value: [value]})


def test_a_stop_cause_says_its_ledger_result() -> None:
    """A strict stop is the ledger's strict_abort, any other stop a failed compaction."""
    assert StopCause.STRICT.ledger_result is LedgerResult.STRICT_ABORT
    others = {cause.ledger_result for cause in StopCause if cause is not StopCause.STRICT}
    assert others == {LedgerResult.FAILED}
