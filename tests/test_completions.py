"""Completion events: every committed compaction and strict abort is announced on the
app's completion stream, after the commit, at least once, and a failure to announce
never undoes a compaction (genbuffer.redis.completions)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest

from genbuffer import keys
from genbuffer.engine.burst import compact_pending
from genbuffer.engine.worker import Worker, WorkerOptions
from genbuffer.faults import FaultPlan, SimulatedCrash
from tests.conftest import Stack
from tests.helpers import compact, expire_lease, stored_bytes
from tests.support.runner import run_genbuf
from tests.support.wait import wait_until

ON_CLUSTER = True  # the stream is one key: no hash tag needed, checked on a real cluster

FIELDS = {
    "org",
    "gen",
    "scenario",
    "outcome",
    "validation_id",
    "chunk_count",
    "bytes",
    "sha256",
    "at",
}


def _entries(stack: Stack) -> list[dict[str, str]]:
    stream = keys.completions_key(stack.buffer.prefix)
    raw: Any = stack.buffer.client.xrange(stream)
    return [
        {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        for _, fields in raw
    ]


def _push(stack: Stack, org: int, gen: int, data: bytes, **kw: Any) -> None:
    for i in range(0, len(data), 5):
        stack.buffer.push_chunk(org, gen, data[i : i + 5], **kw)


@pytest.mark.backends("embedded", "servers", "cluster")
def test_a_committed_compaction_is_announced_with_its_fields(stack: Stack) -> None:
    """One entry per commit, holding what the row committed; a re-run without new chunks
    announces nothing, new chunks announce again."""
    gen = stack.repository.create_generation(31, scenario_id=4)
    data = b'{"plan": "completion events"}'
    _push(stack, 31, gen, data, scenario_id=4)
    result = compact(stack, 31, gen)
    assert result.persisted and result.announced
    (entry,) = _entries(stack)
    assert set(entry) == FIELDS
    assert entry["org"] == "31" and entry["gen"] == str(gen) and entry["scenario"] == "4"
    assert entry["outcome"] == "persisted" and entry["validation_id"] == ""
    assert entry["chunk_count"] == str(result.chunk_count) == str(-(-len(data) // 5))
    assert entry["bytes"] == str(len(data))
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert entry["at"].endswith("Z")
    assert stored_bytes(stack, gen) == data  # the commit came first

    again = compact(stack, 31, gen)
    assert not again.persisted and not again.announced and len(_entries(stack)) == 1
    stack.buffer.push_chunk(31, gen, b" ", scenario_id=4)
    more = compact(stack, 31, gen, delete=True)
    assert more.persisted and more.announced
    latest = _entries(stack)[-1]
    assert latest["sha256"] == hashlib.sha256(data + b" ").hexdigest()


@pytest.mark.backends("embedded", "servers")
def test_a_strict_abort_is_announced_with_its_validation_id(stack: Stack) -> None:
    """Strict mode: nothing persisted, the event names the issue row."""
    gen = stack.repository.create_generation(31)
    _push(stack, 31, gen, b"not json at all")
    result = compact(stack, 31, gen, strict=True, delete=True)
    assert not result.ok and not result.persisted and result.announced
    (entry,) = _entries(stack)
    assert entry["outcome"] == "strict_abort"
    assert entry["validation_id"] == str(result.validation_id) and result.validation_id
    assert entry["scenario"] == ""
    assert entry["sha256"] == hashlib.sha256(b"not json at all").hexdigest()  # the refused one


@pytest.mark.backends("embedded", "servers")
def test_dry_runs_and_a_zero_max_len_announce_nothing(stack: Stack) -> None:
    """A dry run changes nothing anywhere; GENERATION_COMPLETION_EVENTS_MAX_LEN=0 is off."""
    gen = stack.repository.create_generation(31)
    _push(stack, 31, gen, b'{"a": 1}')
    assert not compact(stack, 31, gen, dry_run=True).announced
    off = compact(stack, 31, gen, config={"completion_events": 0})
    assert off.persisted and not off.announced
    assert _entries(stack) == []


@pytest.mark.backends("embedded", "servers", "cluster")
def test_a_crash_between_commit_and_announcement_is_announced_by_the_next_run(
    stack: Stack,
) -> None:
    """Killed after COMMIT (before the event and the trim): the retry finds the row
    holding the chunks, trims them and announces then: at least once."""
    gen = stack.repository.create_generation(31)
    data = b'{"crash": "after commit"}'
    _push(stack, 31, gen, data)
    crash = FaultPlan(crash_at="after_commit", mode="raise")
    with pytest.raises(SimulatedCrash):
        compact(stack, 31, gen, delete=True, config={"faults": crash})
    assert stored_bytes(stack, gen) == data and _entries(stack) == []
    retry = compact(stack, 31, gen, delete=True)
    assert not retry.persisted and retry.deleted and retry.announced
    (entry,) = _entries(stack)
    assert entry["outcome"] == "persisted"
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.backends("embedded", "servers")
def test_a_failure_to_announce_is_logged_and_the_compaction_stands(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream key holding something else (WRONGTYPE): one warning, the row committed,
    the buffer trimmed, the result ok."""
    stream = keys.completions_key(stack.buffer.prefix)
    stack.buffer.client.set(stream, "not a stream")
    gen = stack.repository.create_generation(31)
    data = b'{"announce": "fails"}'
    _push(stack, 31, gen, data)
    with caplog.at_level(logging.WARNING, logger="genbuffer.redis.completions"):
        result = compact(stack, 31, gen, delete=True)
    assert result.ok and result.persisted and result.deleted and not result.announced
    assert stored_bytes(stack, gen) == data
    (record,) = [r for r in caplog.records if r.name == "genbuffer.redis.completions"]
    assert "completion event was not announced" in record.getMessage()
    assert "WRONGTYPE" in record.getMessage()


def _killed_after_commit(stack: Stack, *args: str) -> None:
    """Run ``genbuf ARGS`` with the fault hook that SIGKILLs it right after its COMMIT."""
    env = {**stack.env, "GENBUFFER_CRASH_AT": "after_commit"}
    killed = run_genbuf(list(args), env, faults=True)
    assert killed.returncode == -9, killed.stdout + killed.stderr


def _finished(stack: Stack, gen: int, data: bytes) -> None:
    _push(stack, 31, gen, data)
    stack.buffer.finish(31, gen)


@pytest.mark.backends("embedded", "servers", "cluster")
def test_compact_pending_crashed_after_its_commit_is_announced_by_the_next_run(
    stack: Stack,
) -> None:
    """compact-pending crashes between its COMMIT and its announcement: the next run finds
    the row holding the buffer (already_persisted), announces it, then trims it; a third
    run, with nothing left, announces nothing more."""
    gen = stack.repository.create_generation(31)
    data = b'{"crash": "compact-pending after commit"}'
    _finished(stack, gen, data)
    crash = stack.config(faults=FaultPlan(crash_at="after_commit", mode="raise"))
    with pytest.raises(SimulatedCrash):
        compact_pending(stack.buffer, stack.repository, crash)
    assert stored_bytes(stack, gen) == data and _entries(stack) == []
    retry = compact_pending(stack.buffer, stack.repository, stack.config())
    assert retry.ok and retry.already_persisted == 1 and retry.compacted == 0
    (entry,) = _entries(stack)
    assert entry["outcome"] == "persisted" and entry["gen"] == str(gen)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert stack.buffer.keyspace.generation_keys(31, gen) == []
    compact_pending(stack.buffer, stack.repository, stack.config())
    assert len(_entries(stack)) == 1


@pytest.mark.slow
@pytest.mark.backends("servers")
def test_compact_pending_killed_after_its_commit_is_announced_by_the_next_run(
    stack: Stack,
) -> None:
    """The same with kill -9 (GENBUFFER_CRASH_AT=after_commit) and genbuf processes: once
    the dead run's lease has lapsed, the next run announces and trims."""
    gen = stack.repository.create_generation(31)
    data = b'{"crash": "compact-pending, kill -9"}'
    _finished(stack, gen, data)
    _killed_after_commit(stack, "compact-pending")
    assert stored_bytes(stack, gen) == data and _entries(stack) == []
    expire_lease(stack, "compact-pending")  # JOB_LEASE_TTL after the kill
    retry = run_genbuf(["compact-pending", "--json"], stack.env)
    assert retry.returncode == 0, retry.stderr
    assert "took over the lease" in retry.stderr, retry.stderr
    report = json.loads(retry.stdout)
    assert report["already_persisted"] == 1 and report["compacted"] == 0, report
    (entry,) = _entries(stack)
    assert entry["outcome"] == "persisted" and entry["gen"] == str(gen)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert stack.buffer.keyspace.generation_keys(31, gen) == []


@pytest.mark.slow
@pytest.mark.backends("servers")
def test_a_worker_killed_after_its_commit_is_announced_by_compact_pending(
    stack: Stack,
) -> None:
    """The worker killed after its COMMIT, the buffer then found by compact-pending: the
    compaction is announced by the run that trims the buffer."""
    gen = stack.repository.create_generation(31)
    data = b'{"crash": "worker, then compact-pending"}'
    _finished(stack, gen, data)  # announced to the worker
    _killed_after_commit(stack, "worker", "--json")
    assert stored_bytes(stack, gen) == data and _entries(stack) == []
    retry = run_genbuf(["compact-pending", "--json"], stack.env)
    assert retry.returncode == 0, retry.stderr
    assert json.loads(retry.stdout)["already_persisted"] == 1
    (entry,) = _entries(stack)
    assert entry["outcome"] == "persisted" and entry["gen"] == str(gen)
    assert stack.buffer.keyspace.generation_keys(31, gen) == []


@pytest.mark.slow
@pytest.mark.backends("servers")
def test_a_worker_killed_after_its_commit_is_announced_by_the_next_worker(
    stack: Stack,
) -> None:
    """The worker killed after its COMMIT: its entry is taken over by the next worker,
    which finds the row holding the buffer, announces it and trims it."""
    gen = stack.repository.create_generation(31)
    data = b'{"crash": "worker, then worker"}'
    _finished(stack, gen, data)
    _killed_after_commit(stack, "worker", "--json")
    assert stored_bytes(stack, gen) == data and _entries(stack) == []
    options = WorkerOptions(
        visibility=timedelta(milliseconds=200), sweep_every=timedelta(hours=1), consumer="w2"
    )
    worker = Worker(stack.buffer, stack.repository, stack.config(), options)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: not stack.buffer.keyspace.generation_keys(31, gen),
            30,
            "the next worker to take the entry over and trim the buffer",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert stack.buffer.keyspace.generation_keys(31, gen) == []
    (entry,) = _entries(stack)
    assert entry["outcome"] == "persisted" and entry["gen"] == str(gen)
