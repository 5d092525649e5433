"""The engine's run (engine/run.py, compaction/run.py): run_many compacts several generations
in one transaction, each coming to exactly what it comes to alone; a batch whose
transaction fails is run one by one."""

from __future__ import annotations

import itertools
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from genbuffer.compaction import CompactionRequest, apply
from genbuffer.db.rows import LEDGER
from genbuffer.engine.run import Engine, Ran
from genbuffer.errors import DependencyUnavailable
from genbuffer.states import Outcome
from tests.conftest import Stack
from tests.helpers import compact, count_batches, stored_bytes

ON_CLUSTER = True  # the split layout of the app's untagged keys, too
ON_POOLER = True  # and through PgBouncer in transaction mode

# what a generation holds when the batch runs
KINDS = ("json", "not_json", "no_row", "no_buffer", "held", "strict", "grown")
_ids = itertools.count(7_000_001)


def _prepare(stack: Stack, org: int, kind: str) -> CompactionRequest:
    """One generation in the state ``kind`` names; the request that compacts it."""
    if kind == "no_row":
        gen = next(_ids)
    else:
        gen = stack.repository.create_generation(org, metadata={"kind": kind})
    body = [b"not ", b"json"] if kind in ("not_json", "strict") else [b'{"a": ', b"1}"]
    if kind != "no_buffer":
        stack.buffer.push_many(org, gen, body)
    if kind == "held":  # compacted before, its buffer kept
        compact(stack, org, gen)
    if kind == "grown":  # compacted before, then more chunks came
        stack.buffer.push_many(org, gen, [b"[1,", b"2]"])
        compact(stack, org, gen)
        stack.buffer.push_many(org, gen, [b" "])
    return CompactionRequest(  # with its key, as a worker's event and a scan name it
        org,
        gen,
        delete=True,
        strict=kind == "strict" or None,
        compacted_by="batch-test",
        key=stack.buffer.key_for(org, gen, None),
        exact_key=True,
    )


def _ledger_rows(stack: Stack, gen: int) -> int:
    with stack.repository.engine.connect() as connection:
        count = select(func.count()).select_from(LEDGER).where(LEDGER.c.generation_id == gen)
        return int(connection.execute(count).scalar_one())


def _what(stack: Stack, ran: Ran | DependencyUnavailable) -> tuple[Any, ...]:
    """What a compaction came to and left behind, without its generation's id."""
    assert isinstance(ran, Ran), ran
    request, result = ran.request, ran.result
    gen = request.generation_id
    row = stack.repository.get_generation(gen)
    left = stack.buffer.keyspace.generation_keys(request.organization_id, gen)
    return (
        ran.outcome,
        ran.ok,
        None if result is None else (result.persisted, result.deleted, result.new_chunks),
        None if row is None else stored_bytes(stack, gen),
        None if row is None else row.chunk_count,
        bool(left),
        _ledger_rows(stack, gen),
    )


def _batch_and_alone(stack: Stack, kinds: list[str], org: int) -> None:
    engine = Engine(stack.buffer, stack.repository, stack.config(), compacted_by="batch-test")
    batch = [_prepare(stack, org, kind) for kind in kinds]
    alone = [_prepare(stack, org + 1, kind) for kind in kinds]
    in_batch = engine.run_many(batch)
    one_by_one = [engine.run_one(request) for request in alone]
    assert [_what(stack, ran) for ran in in_batch] == [_what(stack, ran) for ran in one_by_one]


def test_a_batch_comes_to_what_each_comes_to_alone(stack: Stack) -> None:
    """Every kind of generation at once, in one transaction: each outcome, row, buffer
    and ledger as when it is compacted on its own."""
    _batch_and_alone(stack, list(KINDS), org=3_100)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=6))
@pytest.mark.backends("embedded")
def test_any_mix_in_a_batch_comes_to_what_it_comes_to_alone(stack: Stack, kinds: list[str]) -> None:
    """Any mix (hypothesis), on the embedded backend."""
    _batch_and_alone(stack, kinds, org=3_200 + 2 * next(_ids) % 1000)


@pytest.mark.backends("embedded", "servers")
def test_a_batch_whose_write_fails_is_run_one_by_one(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error in the batch's transaction rolls it back whole (no row, ledger
    or trim of it is left); then each generation is compacted on its own, once."""
    org = 3_300
    requests = [_prepare(stack, org, "json") for _ in range(3)]
    failing = requests[1].generation_id
    real = apply.write
    failed: list[int] = []

    def write(tx: Any, request: CompactionRequest, *args: Any, **kwargs: Any) -> Any:
        if request.generation_id == failing and not failed:
            failed.append(failing)
            raise OperationalError("UPDATE", {}, Exception("the server refused it"))
        return real(tx, request, *args, **kwargs)

    monkeypatch.setattr(apply, "write", write)
    batches = count_batches(monkeypatch)
    engine = Engine(stack.buffer, stack.repository, stack.config(), compacted_by="batch-test")
    ran = engine.run_many(requests)
    assert batches == [3] and failed == [failing]
    assert [r.outcome for r in ran if isinstance(r, Ran)] == [Outcome.COMPACTED] * 3
    for request in requests:
        assert stored_bytes(stack, request.generation_id) == b'{"a": 1}'
        assert _ledger_rows(stack, request.generation_id) == 1
        assert stack.buffer.keyspace.generation_keys(org, request.generation_id) == []


@pytest.mark.backends("embedded")
def test_a_generation_named_twice_runs_the_second_time_alone(stack: Stack) -> None:
    """An event and a sweep naming one generation: compacted once; the second finds it
    compacted (as a second run alone does)."""
    org = 3_400
    request = _prepare(stack, org, "json")
    other = _prepare(stack, org, "json")
    engine = Engine(stack.buffer, stack.repository, stack.config(), compacted_by="batch-test")
    ran = engine.run_many([request, other, request])
    assert [r.outcome for r in ran if isinstance(r, Ran)] == [
        Outcome.COMPACTED,
        Outcome.COMPACTED,
        Outcome.ALREADY_PERSISTED,
    ]
    assert _ledger_rows(stack, request.generation_id) == 1


@pytest.mark.backends("embedded")
def test_a_batch_holds_one_artifact_at_a_time(stack: Stack) -> None:
    """A batch writes each artifact and lets it go before reading the next: its peak
    memory (tracemalloc) stays near one generation's, not the batch's sum (before the
    fix each generation's snapshot was held until the batch's COMMIT)."""
    org, size = 3_500, 4
    body = [b'"' + b"x" * (1 << 20) for _ in range(size)] + [b'"']  # ~4 MB of JSON text

    def generations(kind: str, count: int) -> list[CompactionRequest]:
        made = []
        for _ in range(count):
            gen = stack.repository.create_generation(org)
            stack.buffer.push_many(org, gen, body)
            made.append(CompactionRequest(org, gen, delete=True, strict=kind == "strict" or None))
        return made

    engine = Engine(stack.buffer, stack.repository, stack.config(), compacted_by="batch-test")

    def peak(run: Any) -> int:
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    engine.run_one(generations("json", 1)[0])  # (what a first compaction builds, built)
    alone = peak(lambda: engine.run_one(generations("json", 1)[0]))
    batch = generations("json", 3) + generations("strict", 1)
    together = peak(lambda: engine.run_many(batch))
    assert together < 1.1 * alone, (together, alone)


@pytest.mark.backends("embedded", "servers")
def test_an_orphan_redis_refuses_to_mark_fails_alone(stack: Stack) -> None:
    """A generation with no row whose meta hash is hostile (a string, so Redis refuses
    to mark the buffer orphaned) is that generation's failure, in a batch or alone: it
    did escape run_many and run_one, failing the whole batch's entries."""
    org = 3_600
    good = [_prepare(stack, org, "json") for _ in range(2)]
    orphan = _prepare(stack, org, "no_row")
    meta = stack.buffer.key_for(org, orphan.generation_id, None) + ":meta"
    stack.buffer.client.delete(meta)
    stack.buffer.client.set(meta, "garbage")
    engine = Engine(stack.buffer, stack.repository, stack.config(), compacted_by="batch-test")
    ran = engine.run_many([good[0], orphan, good[1]])
    outcomes = [r.outcome for r in ran if isinstance(r, Ran)]
    assert outcomes == [Outcome.COMPACTED, Outcome.FAILED, Outcome.COMPACTED], ran
    alone = engine.run_one(orphan)
    assert alone.outcome == Outcome.FAILED and "no generation" in alone.message


@pytest.mark.backends("cluster")
def test_a_batch_reads_the_meta_hashes_it_reads_apart_at_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster the app's untagged keys have their meta hash in another slot, read
    before each snapshot: a batch reads them all first, in one trip to each node, none
    one by one, and each comes to what it comes to alone."""
    from genbuffer.redis.layout import SPLIT  # noqa: PLC0415

    kinds = ["json", "grown", "held", "not_json", "no_row"]
    batch = [_prepare(stack, 3_300, kind) for kind in kinds]
    alone = [_prepare(stack, 3_301, kind) for kind in kinds]
    one_by_one: list[str] = []
    original = SPLIT._read_meta
    monkeypatch.setattr(SPLIT, "_read_meta", lambda *a: one_by_one.append(a[1]) or original(*a))
    engine = Engine(stack.buffer, stack.repository, stack.config(), compacted_by="batch-test")
    in_batch = engine.run_many(batch)
    assert one_by_one == []
    by_itself = [engine.run_one(request) for request in alone]
    assert len(one_by_one) == len(kinds) - 1  # a generation without a row reads nothing
    assert [_what(stack, ran) for ran in in_batch] == [_what(stack, ran) for ran in by_itself]
