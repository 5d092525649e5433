"""A hypothesis state machine over push, compact, compact --delete, crash and expire,
a meta hash deleted, a failover to a lagging replica, sequence numbers, readers at
any step, and pauses longer than --idle with cron's compact-pending between.

After every step the row must hold exactly the chunks the model says were
persisted, in push order, once each; chunks lost to an expired list must be
reported by the next compaction. Crashes run in-process (FaultPlan mode
"raise"): the transaction rolls back and Redis is left as a killed process
leaves it. A replica is a DUMP of the buffer's two keys taken at some step; its
promotion RESTOREs them, so the buffer goes back to what the replica had (chunks
pushed since are gone without a trace; once the row holds more than the replica
had, a compaction may stop with stream_diverged and then never writes again).
Sequenced examples push with `seq` and retry their last push as a producer does
after a lost reply. Readers (status, a dry run of compact-pending and of a
compaction, inspect, tail, show-generation) may read at any step: they must leave
every key as it was and change no later decision. Time is virtual: a pause moves
the producer's clock and cron's together past --idle; cron always takes a buffer
as idle when it looked at it before the pause and nothing was pushed since, and
never when it saw a push after its last look (a change it has not seen settle).
Every chunk but an empty one starts with `#`, so no artifact parses as JSON and a new
stream after a provisional artifact is appended (GENERATION_LATE_CHUNKS; the JSON
rules have tests of their own in test_unattended.py). Runs on fakeredis + SQLite,
on the real Redis + PostgreSQL, on the real Redis + PostgreSQL through PgBouncer in
transaction mode, and on a real Redis Cluster with the app's untagged keys
(genbuffer.redis.layout, Split).
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from genbuffer import keys
from genbuffer.compaction import CompactionResult, Found
from genbuffer.engine.selection import IDLE, select_buffers
from genbuffer.errors import GenbufferError, NothingToCompact, Quarantined
from genbuffer.faults import IN_ROW_STEPS, FaultPlan, SimulatedCrash
from genbuffer.observation.show_generation import read_artifact
from genbuffer.observation.status import StatusOptions, collect_status
from genbuffer.redis.layout import Split, layout_of
from genbuffer.redis.meta import IsoClock
from tests.conftest import SUMMARY_LINES, Stack
from tests.helpers import compact, stored_bytes

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)
ON_POOLER = True  # and on PostgreSQL through PgBouncer in transaction mode (conftest)

ORG = 31
# 40 in make test; a longer hunt: STATE_MACHINE_EXAMPLES=1000 pytest tests/test_state_machine.py
EXAMPLES = int(os.environ.get("STATE_MACHINE_EXAMPLES", "40"))
LOSS = "chunk_count_mismatch"
IDLE_AFTER = timedelta(minutes=30)  # cron's --idle
READERS = ("status", "dry_pending", "dry_compact", "inspect", "tail", "show")
# every chunk but an empty one starts with "#": no concatenation parses as JSON (see
# the docstring)
CHUNK = st.binary(max_size=11).map(lambda data: b"#" + data if data else b"")


class VirtualClock(IsoClock):
    """The producer's clock, moved on by pauses (cron's `now` moves with it)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = timedelta(0)

    def at(self) -> datetime:
        """Now, on this clock."""
        return datetime.now(UTC) + self.offset

    def now(self) -> str:
        """Now, as the producer stamps it (ISO 8601 UTC)."""
        return self.at().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CompactionMachine(RuleBasedStateMachine):
    """Model: persisted (in the row), pending (only in Redis), and whether a loss is owed."""

    stack: Stack
    examples = 0
    steps = 0
    reads = 0
    pauses = 0
    looked_pauses = 0

    def __init__(self) -> None:
        super().__init__()
        CompactionMachine.examples += 1
        self.gen = self.stack.repository.create_generation(ORG)
        self.persisted: list[bytes] = []
        self.pending: list[bytes] = []
        self.loss_owed = False
        self.key = keys.chunks_key(ORG, self.gen, None, self.stack.buffer.prefix)
        # on a cluster genbuf's own hash beside the list, {K}:genbuf, is a third key
        self.names = sorted(
            {
                self.key,
                keys.meta_key(self.key),
                layout_of(self.stack.buffer.target, self.key).state_key(self.key),
            }
        )
        self.sequenced = False
        self.next_seq = 0
        self.last_push: tuple[int, list[bytes]] | None = None
        self.unacked = False  # a crash left committed chunks in the list, not trimmed
        # a replica: the keys' DUMPs, and the model then (pending, persisted, counting)
        self.replica: tuple[dict[str, tuple[bytes, int]], list[bytes], int, bool] | None = None
        # the buffer may have gone behind the row: a failover, or the list expiring after
        # its meta hash was lost (positions then cannot be known, and compaction stops)
        self.may_diverge = False
        self.counting = True  # the meta hash counts every chunk of this buffer life
        self.list_expired = False  # the list expired in this buffer life (see delete_meta)
        # chunks pushed since into a new list, which no compaction has recorded yet (see
        # delete_meta)
        self.list_refilled = False
        # a retried push sits in the list until a compaction with --delete trims it; only
        # the meta hash's sequence numbers tell it is a repeat (see delete_meta)
        self.retry_in_list = False
        # the buffer life in Redis is the one the row last recorded (or the row is empty)
        self.life_recorded = True
        self.meta_lost_since_copy = False
        # after a compaction stopped on a diverged buffer, the model no longer knows what
        # the operator would do: it checks only that what was persisted stays, in order
        self.gave_up = False
        # cron's record of its last look at the buffer: current (nothing pushed since),
        # or stale (pushed since); `look_known` is false once the record may be an
        # older one than the model knows (a failover, a list expired under its meta)
        self.clock = VirtualClock()
        self.stack.buffer.clock = self.stack.buffer.protocol.clock = self.clock
        self.looked = False
        self.stale_look = False
        self.look_known = True

    @initialize(sequenced=st.booleans())
    def choose_producer(self, sequenced: bool) -> None:
        """A producer that numbers its chunks (and retries), or one that does not (the
        only kind on a cluster's untagged keys: sequence numbers need one slot)."""
        self.sequenced = sequenced and self.stack.name != "cluster"

    def _push(self, chunks: list[bytes]) -> None:
        self._changed()
        self.list_refilled = self.list_refilled or self.list_expired
        if self.sequenced:
            self.stack.buffer.push_many(ORG, self.gen, chunks, seq=self.next_seq)
            self.last_push = (self.next_seq, chunks)
            self.next_seq += len(chunks)
        else:
            self.stack.buffer.push_many(ORG, self.gen, chunks)

    def _compact(
        self,
        delete: bool,
        crash_at: str | None = None,
        during: tuple[str, list[bytes]] | None = None,
        selected: str | None = None,
    ) -> None:
        late: list[bytes] = []

        def push_late(step: str) -> None:
            if during is not None and step == during[0] and not late:
                self._push(during[1])
                late.extend(during[1])

        faults = FaultPlan(crash_at=crash_at, mode="raise", on_step=push_late)
        self.looked = self.stale_look = False  # it may delete the record: look again
        try:
            self._run(delete, faults, crash_at, selected)
        finally:
            self.pending += late  # pushed after the snapshot: for the next compaction

    def _run(
        self, delete: bool, faults: FaultPlan, crash_at: str | None, selected: str | None
    ) -> None:
        committed_before_crash = crash_at in {"after_commit", "before_ack"}
        try:
            result = compact(
                self.stack,
                ORG,
                self.gen,
                delete=delete,
                found=Found(selected=selected),
                config={"faults": faults},
            )
        except NothingToCompact:
            assert not self.pending and not self.loss_owed
            return
        except Quarantined:
            assert self.gave_up, "only a buffer refused as diverged, again and again"
            return
        except SimulatedCrash:
            if committed_before_crash and self.pending and not self.gave_up:
                self.persisted += self.pending
                self.pending = []
                self.loss_owed = False
                self.unacked = delete
            return
        codes = [issue["code"] for issue in result.issues]
        if "stream_diverged" in codes:
            assert self.may_diverge, "a buffer that never fell behind the row was refused"
            assert not result.persisted and not result.deleted
            self.gave_up = True
            return
        if self.gave_up:
            return
        self._note_buffer_state(result, delete)
        if self.loss_owed:
            assert LOSS in codes and not result.ok, "a lost chunk went unreported"
        if result.persisted:
            self.persisted += self.pending
            self.pending = []
            self.loss_owed = False
        else:
            assert not self.pending, "new chunks were left unpersisted in soft mode"

    def _note_buffer_state(self, result: CompactionResult, delete: bool) -> None:
        """What a finished compaction tells the model of the buffer left in Redis."""
        if result.persisted or result.ok:
            self.life_recorded = not result.deleted
            self.list_refilled = False  # the row now describes the list in Redis
        if result.deleted:
            self.counting = True  # the buffer life ended: the next one starts counted
            self.list_expired = self.list_refilled = False
            self.may_diverge = False  # and whatever a replica brought back is gone
        if delete and result.ok:
            self.retry_in_list = False  # trimmed with what the row holds
        if result.persisted or (delete and result.ok):
            self.unacked = False  # committed chunks were trimmed, or the row re-recorded

    @rule(chunks=st.lists(CHUNK, min_size=1, max_size=4))
    def push(self, chunks: list[bytes]) -> None:
        """A producer appends chunks."""
        self._push(chunks)
        self.pending += chunks

    @precondition(lambda self: self.sequenced and self.last_push is not None)
    @rule()
    def retry_last_push(self) -> None:
        """The producer lost the reply of its last push and sends it again: no change."""
        assert self.last_push is not None
        seq, chunks = self.last_push
        length = self.stack.buffer.keyspace.list_length(self.key)
        self.stack.buffer.push_many(ORG, self.gen, chunks, seq=seq)
        self.retry_in_list = True
        if self.stack.buffer.keyspace.list_length(self.key) != length:
            self._changed()  # what cron sees: a repeat skipped by its number changes nothing

    def meta_may_vanish(self) -> bool:
        """Whether delete_meta is a fault the model can follow here (its docstring)."""
        split = isinstance(layout_of(self.stack.buffer.target, self.key), Split)
        return (
            not (self.unacked or self.retry_in_list or self.may_diverge)
            and (self.life_recorded or not self.persisted)
            and not (self.list_expired and (split or self.list_refilled))
        )

    @precondition(lambda self: self.meta_may_vanish())
    @rule()
    def delete_meta(self) -> None:
        """The meta hash vanishes (eviction, a hand DEL) while the list lives on.

        Not while a crash left committed chunks untrimmed, a retried push is still in
        the list, or a promoted replica's old buffer is there: with two faults at once
        positions are not known (docs/operations.md, "Failure scenarios"). A loss it held the
        evidence of goes unreported. Nor in a new buffer life no compaction has seen
        yet: its list, alike at the head, would pass for the row's own. Nor, on a
        cluster's split layout, after the list expired in this buffer life: genbuf's own
        {K}:genbuf still names the stream, so a list pushed anew is refused as diverged
        (reported, stream_diverged), where a single server's lost meta hash made it a new
        stream; the list and then the meta hash lost are two faults at once too. Nor, on
        one server, once chunks were pushed into a new list after the list expired in
        this buffer life (under the old meta hash or a new one) and no compaction has
        recorded it: as in a new buffer life, with the meta hash gone nothing tells that
        list from the one the row was compacted from, and one holding the row's last
        chunks where they were is matched by content, its chunks there taken as the row's
        own, unreported (push [b""], compact, expire_list, push [b""], delete_meta,
        compact; test_a_refilled_list_then_its_meta_lost_is_two_faults).
        """
        self.stack.buffer.client.delete(keys.meta_key(self.key))
        if not isinstance(
            layout_of(self.stack.buffer.target, self.key), Split
        ):  # else cron's record is in {K}:genbuf
            self.looked = self.stale_look = False
        self.loss_owed = False
        self.meta_lost_since_copy = True
        self.last_push = None  # its sequence numbers went with it
        self.counting = False

    @rule()
    def replicate(self) -> None:
        """A replica catches up: a copy of both keys as they are now."""
        client = self.stack.buffer.client
        copy = {
            name: (client.dump(name), max(int(client.pttl(name)), 0))
            for name in self.names
            if client.exists(name)
        }
        self.replica = (copy, list(self.pending), len(self.persisted), self.counting)
        self.meta_lost_since_copy = False

    @precondition(lambda self: self.replica is not None and not self.unacked)
    @rule()
    def promote_replica(self) -> None:
        """Failover: the replica becomes the primary, without what it had not received.

        A replica's copy of a list with no meta hash (so no stream id), or of a meta
        hash lost on the primary since, cannot be told from a new stream: those
        failovers are left out (docs/operations.md, "Failure scenarios").
        """
        assert self.replica is not None
        copy, pending, persisted_then, counting = self.replica
        own = {
            keys.meta_key(self.key),
            layout_of(self.stack.buffer.target, self.key).state_key(self.key),
        }
        if self.meta_lost_since_copy or (self.key in copy and not own <= set(copy)):
            self.replica = None
            return
        client = self.stack.buffer.client
        client.delete(*self.names)
        for name, (value, ttl) in copy.items():
            client.restore(name, ttl, value, replace=True)
        self.look_known = False  # the replica's meta hash may hold an older look
        if len(self.persisted) == persisted_then:
            self.pending = pending  # what was pushed since is gone, silently
        else:
            # the row holds more than the replica's buffer: what the replica still has
            # was persisted meanwhile, and the buffer may now be refused as diverged
            self.pending = []
            self.may_diverge = True
        self.loss_owed = False
        self.counting = counting
        self.replica = None
        self.last_push = None

    @rule(delete=st.booleans())
    def compact(self, delete: bool) -> None:
        """A compaction, with or without --delete."""
        self._compact(delete)

    @rule(step=st.sampled_from(IN_ROW_STEPS), delete=st.booleans())
    def crash(self, step: str, delete: bool) -> None:
        """A compaction killed at a step."""
        self._compact(delete, crash_at=step)

    @rule(
        step=st.sampled_from(IN_ROW_STEPS),
        chunks=st.lists(CHUNK, min_size=1, max_size=3),
        delete=st.booleans(),
    )
    def push_during_compaction(self, step: str, chunks: list[bytes], delete: bool) -> None:
        """A producer pushes while a compaction is at a step: the chunks must survive."""
        self._compact(delete, during=(step, chunks))

    @precondition(lambda self: self.counting)
    @rule()
    def expire_list(self) -> None:
        """The list expires while its meta hash lives on: pending chunks are gone, and
        the next compaction reports them.

        Not after the meta hash was lost in this buffer life: once it no longer counts
        every chunk, a list expiring too is two faults at once (docs/operations.md,
        "Failure scenarios").
        """
        self.last_push = None  # a retry now would deliver lost chunks again, not repeat
        self.list_expired = True
        self.stack.buffer.client.delete(self.key)
        self.look_known = False  # pushes may bring the count back to the one cron saw
        # after a failover to a lagging replica the buffer's positions may collide with
        # what the row holds, and with the list gone nothing shows it: two faults at once
        if self.pending and not self.may_diverge:
            self.loss_owed = True
        self.pending = []

    @rule()
    def expire_everything(self) -> None:
        """Both keys expire: whatever was pending is gone without a trace."""
        self.stack.buffer.keyspace.delete(self.names)
        self.looked = self.stale_look = False
        self.counting = True  # a new buffer life starts from nothing
        self.list_expired = self.list_refilled = False
        self.may_diverge = self.may_diverge and self.replica is not None
        self.retry_in_list = False
        self.life_recorded = False
        self.last_push = None
        self.pending = []
        self.loss_owed = False

    @rule(reader=st.sampled_from(READERS))
    def read(self, reader: str) -> None:
        """A read-only command at this step: every key stays as it was (value and TTL
        kept), so it cannot change what a compaction or cron decides later."""
        client = self.stack.buffer.client
        before = {name: client.dump(name) for name in self.names}
        self._reader(reader)
        assert {name: client.dump(name) for name in self.names} == before, reader
        CompactionMachine.reads += 1

    def _reader(self, reader: str) -> None:
        stack, now = self.stack, self.clock.at()
        if reader == "status":
            collect_status(stack.buffer, stack.repository, StatusOptions(), now=now)
        elif reader == "dry_pending":
            select_buffers(stack.buffer, IDLE_AFTER, now, dry_run=True)
        elif reader == "dry_compact":
            # nothing to compact, quarantined: a dry run says so and writes nothing
            with contextlib.suppress(GenbufferError):
                compact(stack, ORG, self.gen, dry_run=True)
        elif reader == "inspect":
            stack.buffer.keyspace.describe(stack.buffer.keyspace.generation_keys(ORG, self.gen))
        elif reader == "tail":
            stack.buffer.tailer.page(self.key, 0)
        else:
            with contextlib.suppress(GenbufferError):  # no artifact yet
                read_artifact(stack.repository, stack.buffer, ORG, self.gen)

    def _changed(self) -> None:
        """Chunks arrived: cron's last look, if any, is stale."""
        self.stale_look = self.stale_look or self.looked
        self.looked = False

    @rule()
    def cron_looks(self) -> None:
        """compact-pending (--idle 30m) looks at every buffer and notes what it sees."""
        select_buffers(self.stack.buffer, IDLE_AFTER, self.clock.at(), dry_run=False)
        if self.stack.buffer.keyspace.list_length(self.key):
            self.looked, self.stale_look = True, False

    @rule(look_first=st.booleans())
    def pause_then_cron(self, look_first: bool) -> None:
        """Nothing arrives for longer than --idle (cron may look just before), then
        compact-pending runs: a buffer it looked at, unchanged since, is taken as idle
        and compacted as provisional (and deleted); one it saw change is not."""
        if look_first:
            self.cron_looks()
        self.clock.offset += IDLE_AFTER + timedelta(minutes=1)
        chosen = select_buffers(self.stack.buffer, IDLE_AFTER, self.clock.at(), dry_run=False)
        idle = self._idle(chosen)
        if self.look_known and not self.gave_up:
            assert idle or not self.looked, "cron saw it unchanged before the pause"
            assert not idle or not self.stale_look, "cron saw it change, and not settle"
        if idle:
            CompactionMachine.pauses += 1
            CompactionMachine.looked_pauses += self.looked
            self._compact(True, selected="idle")
        elif self.stack.buffer.keyspace.list_length(self.key):
            self.looked, self.stale_look = True, False  # that run looked too

    def _idle(self, chosen: object) -> bool:
        candidates = getattr(chosen, "candidates", [])
        return any(f.generation_id == self.gen and why == IDLE for f, why in candidates)

    @invariant()
    def row_holds_exactly_the_persisted_chunks(self) -> None:
        """Nothing lost, nothing duplicated, in push order."""
        CompactionMachine.steps += 1
        stored = stored_bytes(self.stack, self.gen) or b""
        if self.gave_up:  # what was persisted stays, in order, whatever came after
            assert stored.startswith(b"".join(self.persisted))
        else:
            assert stored == b"".join(self.persisted)


@pytest.mark.slow
def test_compaction_state_machine(stack: Stack) -> None:
    """Run the state machine on this backend."""
    CompactionMachine.stack = stack
    CompactionMachine.examples = CompactionMachine.steps = 0
    CompactionMachine.reads = CompactionMachine.pauses = CompactionMachine.looked_pauses = 0
    run_state_machine_as_test(
        CompactionMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    SUMMARY_LINES.append(
        f"state machine [{stack.name}]: {CompactionMachine.examples} examples, "
        f"{CompactionMachine.steps} invariant checks, {CompactionMachine.reads} reads, "
        f"{CompactionMachine.pauses} idle compactions after a pause "
        f"({CompactionMachine.looked_pauses} after cron's look)"
    )
    assert CompactionMachine.examples >= EXAMPLES


@pytest.mark.parametrize("lost_before", [False, True])
@pytest.mark.parametrize("again", [b"", b"#x"])
def test_a_refilled_list_then_its_meta_lost_is_two_faults(
    stack: Stack, again: bytes, lost_before: bool
) -> None:
    """push [b""], compact, the list expires (and, ``lost_before``, the meta hash is lost
    too), the producer pushes again, then the meta hash is lost before a compaction saw
    the new list. The machine does not draw that last loss (two faults at once); done
    all the same, genbuffer does what docs/operations.md says. A list holding the row's
    last chunk where the row had it is taken for the row's own (on one server matched
    by content, on a cluster's split layout by genbuf's own {K}:genbuf): nothing new,
    that chunk not persisted. Any other list is a new stream on one server, refused as
    diverged on the split layout."""
    CompactionMachine.stack = stack
    machine = CompactionMachine()
    machine.choose_producer(sequenced=False)
    machine.push(chunks=[b""])
    machine.compact(delete=False)
    machine.expire_list()
    split = isinstance(layout_of(stack.buffer.target, machine.key), Split)
    assert machine.meta_may_vanish() != split
    if lost_before and not split:
        machine.delete_meta()
    elif lost_before:
        stack.buffer.client.delete(keys.meta_key(machine.key))
    machine.push(chunks=[again])
    assert not machine.meta_may_vanish()
    stack.buffer.client.delete(keys.meta_key(machine.key))
    result = compact(stack, ORG, machine.gen)
    codes = [issue["code"] for issue in result.issues]
    if again == b"":
        assert result.ok and result.message.startswith("already compacted: nothing new")
        assert split or "matched to the row by content" in result.message
    elif split:
        assert "stream_diverged" in codes and not result.deleted
    else:
        assert result.persisted and stored_bytes(stack, machine.gen) == again
    assert result.persisted == (again != b"" and not split)
