"""The compaction engine: run_one's one outcome mapping, the pool, and both runs on it."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from genbuffer.compaction import CompactionRequest, CompactionResult
from genbuffer.db.engine import parse_database_url
from genbuffer.engine import run
from genbuffer.engine.burst import compact_pending
from genbuffer.engine.pool import Pool, pool_size
from genbuffer.engine.run import Engine, Job, Ran, outcome_of
from genbuffer.engine.worker import _logged, _record
from genbuffer.errors import GenbufferError, RedisUnavailable, UsageError
from genbuffer.redis.events import Event
from genbuffer.states import Outcome, WorkerOutcome
from tests.conftest import Stack
from tests.helpers import stored_bytes
from tests.support.wait import wait_until

ORG = 83


def _result(**fields: Any) -> CompactionResult:
    base: dict[str, Any] = {
        "ok": True,
        "persisted": True,
        "organization_id": ORG,
        "generation_id": 1,
        "scenario_id": None,
        "key": "k",
        "chunk_count": 2,
        "bytes": 4,
        "validation_id": None,
        "issues": [],
        "deleted": False,
        "mode": "soft",
        "new_chunks": 2,
    }
    return CompactionResult(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({}, Outcome.COMPACTED),
        ({"ok": False}, Outcome.COMPACTED),  # written, though chunks were lost before it
        ({"ok": False, "persisted": False}, Outcome.FAILED),
        ({"persisted": False, "new_chunks": 0}, Outcome.ALREADY_PERSISTED),
        ({"persisted": False, "dry_run": True}, Outcome.COMPACTED),  # what it would write
    ],
)
def test_a_result_has_one_outcome(fields: dict[str, Any], outcome: Outcome) -> None:
    """outcome_of: the one mapping from a compaction's result to its outcome."""
    assert outcome_of(_result(**fields)) == outcome


def test_the_worker_logs_the_words_it_always_logged() -> None:
    """A buffer the row already held is `compacted` in the worker's log when this run
    trimmed it, `needless` otherwise; every other outcome is logged as itself."""
    request = CompactionRequest(ORG, 1)
    held = _result(persisted=False, new_chunks=0, deleted=True)
    assert _logged(Ran(Outcome.ALREADY_PERSISTED, request, held)) == WorkerOutcome.COMPACTED
    kept = _result(persisted=False, new_chunks=0, deleted=False)
    assert _logged(Ran(Outcome.ALREADY_PERSISTED, request, kept)) == WorkerOutcome.NEEDLESS
    for outcome in (Outcome.COMPACTED, Outcome.NEEDLESS, Outcome.ORPHANED, Outcome.FAILED):
        assert _logged(Ran(outcome, request, message="m")) == outcome.value
    event = Event("1-0", ORG, 1, None, idle=False)
    record = _record(event, Ran(Outcome.FAILED, request, message="boom", seconds=0.25), "w")
    assert (record["ok"], record["outcome"], record["message"], record["seconds"]) == (
        False,
        "failed",
        "boom",
        0.25,
    )


def test_run_one_maps_every_exception_once(
    embedded: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No row: orphaned, set aside the first time only; a buffer with nothing: needless;
    a genbuf error: failed with its message; anything else: failed, one line of at most
    300 characters; an outage: raised, for the caller to stop or pause."""
    engine = Engine(embedded.buffer, embedded.repository, embedded.config())
    missing = 999_001
    embedded.buffer.push_many(ORG, missing, [b"{}"])
    first = engine.run_one(engine.request(Job(ORG, missing, None)))
    again = engine.run_one(engine.request(Job(ORG, missing, None)))
    assert (first.outcome, first.first_report, again.first_report) == (
        Outcome.ORPHANED,
        True,
        False,
    )
    assert not first.ok
    gen = embedded.repository.create_generation(ORG)
    nothing = engine.run_one(engine.request(Job(ORG, gen, None)))
    assert (nothing.outcome, nothing.ok) == (Outcome.NEEDLESS, True)

    def raising(error: BaseException) -> None:
        def fail(request: CompactionRequest, **_: Any) -> CompactionResult:
            raise error

        monkeypatch.setattr(run, "assemble_and_persist", fail)

    raising(GenbufferError("refused"))
    said = engine.run_one(engine.request(Job(ORG, gen, None)))
    assert (said.outcome, said.message) == (Outcome.FAILED, "refused")
    raising(ValueError("x\n" * 400))
    odd = engine.run_one(engine.request(Job(ORG, gen, None)))
    assert odd.outcome == Outcome.FAILED and "\n" not in odd.message
    assert odd.message.startswith("ValueError: x x") and len(odd.message) == 300 + 12
    raising(RedisUnavailable("gone"))
    with pytest.raises(RedisUnavailable):
        engine.run_one(engine.request(Job(ORG, gen, None)))


def test_the_pool_runs_one_at_a_time_on_sqlite() -> None:
    """SQLite writes one at a time: one thread, whatever was asked."""
    assert (pool_size(4, "sqlite"), pool_size(4, "postgresql"), pool_size(0, "mysql")) == (1, 4, 1)
    request = CompactionRequest(ORG, 1)
    with Pool[str](2, name="test") as pool:
        pool.start("a", lambda: Ran(Outcome.NEEDLESS, request))
        pool.start("b", lambda: (_ for _ in ()).throw(RedisUnavailable("down")))
        finished = dict(pool.drain())
    assert finished["a"] == Ran(Outcome.NEEDLESS, request)
    assert isinstance(finished["b"], RedisUnavailable)
    assert pool.running == 0 and pool.free == 2


def test_compact_pending_compacts_while_its_scan_goes_on(
    embedded: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first compaction starts before the scan has read its last page, and --limit
    still counts every buffer the scan saw."""
    monkeypatch.setattr("genbuffer.engine.selection.OBSERVE_PAGE", 2)
    gens = [embedded.repository.create_generation(ORG) for _ in range(5)]
    for gen in gens:
        embedded.buffer.push_many(ORG, gen, [b'{"n": ', f"{gen}}}".encode()])
        embedded.buffer.finish(ORG, gen)
    pages_read: list[int] = []
    at_first_compaction: list[int] = []
    real_observe = type(embedded.buffer.scan).observe
    real = run.assemble_and_persist

    def counting_observe(self: Any, *args: Any, **kwargs: Any) -> Any:
        pages_read.append(1)
        return real_observe(self, *args, **kwargs)

    def first_seen(request: CompactionRequest, **kwargs: Any) -> CompactionResult:
        if not at_first_compaction:
            at_first_compaction.append(len(pages_read))
        return real(request, **kwargs)

    monkeypatch.setattr(type(embedded.buffer.scan), "observe", counting_observe)
    monkeypatch.setattr(run, "assemble_and_persist", first_seen)
    result = compact_pending(
        embedded.buffer, embedded.repository, embedded.config(), idle=timedelta(hours=1), limit=3
    )
    assert (result.buffers, result.eligible, result.compacted) == (5, 3, 3)
    assert len(pages_read) == 3 and at_first_compaction == [1]
    assert sum(stored_bytes(embedded, gen) is not None for gen in gens) == 3


def test_a_database_url_with_an_unencoded_at_in_its_password_is_a_usage_error() -> None:
    """SQLAlchemy ends the password at its first @: the rest became the host, which the
    driver's error printed. Exit 2 naming DATABASE_URL, the password not shown."""
    with pytest.raises(UsageError, match="DATABASE_URL") as error:
        parse_database_url("postgresql://u:s3c@r3t@db.internal/app")
    assert "r3t" not in str(error.value)


def test_a_database_url_whose_port_does_not_parse_does_not_echo_it() -> None:
    """A password with an unencoded `@` and `:` put a piece of it in the port: the
    error names the port as wrong without printing it."""
    with pytest.raises(UsageError, match="DATABASE_URL") as error:
        parse_database_url("postgresql://u:p@ss:s3cr3t@db.internal/app")
    assert "s3cr3t" not in str(error.value)


def test_a_runner_that_raises_loses_no_other_result_and_leaves_no_thread_busy() -> None:
    """A batch's runner raising something other than an outage: raised once, and the
    results taken with it are handed back by the next call; nothing is left counted in
    flight (a drain at stop used to wait for ever)."""
    request = CompactionRequest(ORG, 1)
    ran = Ran(Outcome.NEEDLESS, request)
    with Pool[str](2, name="test") as pool:
        both = threading.Barrier(3)

        def bad() -> list[Ran | RedisUnavailable]:
            both.wait()
            raise RuntimeError("boom")

        def good() -> list[Ran | RedisUnavailable]:
            both.wait()
            return [ran]

        pool.start_batch(["a"], bad)
        pool.start_batch(["b"], good)
        both.wait()
        wait_until(lambda: pool._done.qsize() == 2, 30, "both runners finished")
        with pytest.raises(RuntimeError):
            pool.finished(timeout=5)
        assert pool.finished(timeout=0) == [("b", ran)]
        assert pool.running == 0 and pool.drain() == []
