"""A hypothesis state machine over push, compact, compact --delete, crash and expire.

After every step the row must hold exactly the chunks the model says were
persisted, in push order, once each; chunks lost to an expired list must be
reported by the next compaction. Crashes run in-process (FaultPlan mode
"raise"): the transaction rolls back and Redis is left as a killed process
leaves it. Runs on fakeredis + SQLite and on the real Redis + PostgreSQL.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from genbuffer import keys
from genbuffer.errors import NothingToCompact
from genbuffer.faults import STEPS, FaultPlan, SimulatedCrash
from tests.conftest import SUMMARY_LINES, Stack
from tests.helpers import compact, stored_bytes

ORG = 31
LOSS = "chunk_count_mismatch"


class CompactionMachine(RuleBasedStateMachine):
    """Model: persisted (in the row), pending (only in Redis), and whether a loss is owed."""

    stack: Stack
    examples = 0
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        CompactionMachine.examples += 1
        self.gen = self.stack.repository.create_generation(ORG)
        self.persisted: list[bytes] = []
        self.pending: list[bytes] = []
        self.loss_owed = False
        self.key = keys.chunks_key(ORG, self.gen, None, self.stack.buffer.prefix)

    def _compact(
        self,
        delete: bool,
        crash_at: str | None = None,
        during: tuple[str, list[bytes]] | None = None,
    ) -> None:
        late: list[bytes] = []

        def push_late(step: str) -> None:
            if during is not None and step == during[0] and not late:
                self.stack.buffer.push_many(ORG, self.gen, during[1])
                late.extend(during[1])

        faults = FaultPlan(crash_at=crash_at, mode="raise", on_step=push_late)
        try:
            self._run(delete, faults, crash_at)
        finally:
            self.pending += late  # pushed after the snapshot: for the next compaction

    def _run(self, delete: bool, faults: FaultPlan, crash_at: str | None) -> None:
        committed_before_crash = crash_at in {"after_commit", "before_ack"}
        try:
            result = compact(self.stack, ORG, self.gen, delete=delete, config={"faults": faults})
        except NothingToCompact:
            assert not self.pending and not self.loss_owed
            return
        except SimulatedCrash:
            if committed_before_crash and self.pending:
                self.persisted += self.pending
                self.pending = []
                self.loss_owed = False
            return
        codes = [issue["code"] for issue in result.issues]
        if self.loss_owed:
            assert LOSS in codes and not result.ok, "a lost chunk went unreported"
        if result.persisted:
            self.persisted += self.pending
            self.pending = []
            self.loss_owed = False
        else:
            assert not self.pending, "new chunks were left unpersisted in soft mode"

    @rule(chunks=st.lists(st.binary(max_size=12), min_size=1, max_size=4))
    def push(self, chunks: list[bytes]) -> None:
        """A producer appends chunks."""
        self.stack.buffer.push_many(ORG, self.gen, chunks)
        self.pending += chunks

    @rule(delete=st.booleans())
    def compact(self, delete: bool) -> None:
        """A compaction, with or without --delete."""
        self._compact(delete)

    @rule(step=st.sampled_from(STEPS), delete=st.booleans())
    def crash(self, step: str, delete: bool) -> None:
        """A compaction killed at a step."""
        self._compact(delete, crash_at=step)

    @rule(
        step=st.sampled_from(STEPS),
        chunks=st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=3),
        delete=st.booleans(),
    )
    def push_during_compaction(self, step: str, chunks: list[bytes], delete: bool) -> None:
        """A producer pushes while a compaction is at a step: the chunks must survive."""
        self._compact(delete, during=(step, chunks))

    @rule()
    def expire_list(self) -> None:
        """The list expires while its meta hash lives on: pending chunks are gone."""
        self.stack.buffer.client.delete(self.key)
        if self.pending:
            self.loss_owed = True
        self.pending = []

    @rule()
    def expire_everything(self) -> None:
        """Both keys expire: whatever was pending is gone without a trace."""
        self.stack.buffer.delete([self.key, keys.meta_key(self.key)])
        self.pending = []
        self.loss_owed = False

    @invariant()
    def row_holds_exactly_the_persisted_chunks(self) -> None:
        """Nothing lost, nothing duplicated, in push order."""
        CompactionMachine.steps += 1
        stored = stored_bytes(self.stack, self.gen)
        assert (stored or b"") == b"".join(self.persisted)


@pytest.mark.slow
def test_compaction_state_machine(stack: Stack) -> None:
    """Run the state machine on this backend."""
    CompactionMachine.stack = stack
    CompactionMachine.examples = CompactionMachine.steps = 0
    run_state_machine_as_test(
        CompactionMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    SUMMARY_LINES.append(
        f"state machine [{stack.name}]: {CompactionMachine.examples} examples, "
        f"{CompactionMachine.steps} invariant checks"
    )
    assert CompactionMachine.examples >= 40
