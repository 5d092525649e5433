"""genbuf worker: announced and swept buffers compacted by a fleet, kill -9 and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from genbuffer import keys
from genbuffer.compaction.placement import RowRecord
from genbuffer.db.engine import make_engine
from genbuffer.db.repository import Repository
from genbuffer.engine.worker import Worker, WorkerOptions
from genbuffer.faults import FaultPlan
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.fleet import WorkerBeat
from tests.conftest import SUMMARY_LINES, Stack
from tests.helpers import count_batches, stored_bytes
from tests.support.faulty import Hold
from tests.support.runner import FAULTY_GENBUF, GENBUF, clean_environ
from tests.support.urls import POSTGRES_ADMIN_URL
from tests.support.wait import wait_until

ORG = 76


def _chunks(gen: int) -> list[bytes]:
    return [f"{gen}:{i};".encode() for i in range(1 + gen % 7)]


def _run_until(worker: Worker, done: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Run ``worker`` in a thread until ``done``; then stopped and joined."""
    with _running(worker) as running:
        running.wait_for(done, timeout, what)


def test_worker_compacts_announced_and_swept_buffers(stack: Stack) -> None:
    """finish() announces; the sweeper finds an unannounced finished buffer and, with
    --idle, a plain RPUSH producer's idle list. All byte-exact, no buffer left."""
    announced = [stack.repository.create_generation(ORG) for _ in range(6)]
    for gen in announced:
        stack.buffer.push_many(ORG, gen, _chunks(gen))
        stack.buffer.finish(ORG, gen)
    silent = stack.repository.create_generation(ORG)  # finished, its event lost
    stack.buffer.push_many(ORG, silent, _chunks(silent))
    silent_key = stack.buffer.key_for(ORG, silent, None)
    stack.buffer.client.hset(silent_key + ":meta", "finished_at", "2026-01-01T00:00:00Z")
    plain = stack.repository.create_generation(ORG)  # RPUSH only, quiet for an hour
    plain_key = stack.buffer.key_for(ORG, plain, None)
    stack.buffer.client.rpush(plain_key, *_chunks(plain))
    stack.buffer.client.hset(plain_key + ":meta", "last_chunk_at", "2020-01-01T00:00:00Z")
    records: list[dict[str, object]] = []
    options = WorkerOptions(concurrency=3, idle=timedelta(minutes=30), consumer="w1")
    worker = Worker(stack.buffer, stack.repository, stack.config(), options, log=records.append)
    everyone = [*announced, silent, plain]
    _run_until(
        worker,
        lambda: (
            all(stored_bytes(stack, g) is not None for g in everyone)
            and not stack.buffer.keyspace.existing_keys([plain_key])
        ),
        "every buffer compacted, the plain list gone",
    )
    for gen in everyone:
        assert stored_bytes(stack, gen) == b"".join(_chunks(gen)), gen
        assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
    assert worker.summary.sweeps >= 1 and worker.summary.compacted >= len(everyone)
    # what finish() announced is queued: the sweeper adds the silent and the plain only
    assert worker.summary.announced_by_sweeps == 2


def test_a_dead_workers_entries_are_taken_over(embedded: Stack) -> None:
    """An entry read by a worker that never acknowledged it is taken over after the
    visibility timeout, and compacted once."""
    gen = embedded.repository.create_generation(ORG)
    embedded.buffer.push_many(ORG, gen, _chunks(gen))
    embedded.buffer.finish(ORG, gen)
    events = embedded.buffer.events
    events.ensure_group()
    assert [e.generation_id for e in events.read("dead", 10, 1).events] == [gen]  # never acked
    assert events.try_sweep("another worker", 3_600_000)  # the fleet's sweep is not ours
    options = WorkerOptions(
        visibility=timedelta(milliseconds=200), sweep_every=timedelta(hours=1), consumer="w2"
    )
    worker = Worker(embedded.buffer, embedded.repository, embedded.config(), options)
    _run_until(worker, lambda: stored_bytes(embedded, gen) is not None, "the entry taken over")
    assert stored_bytes(embedded, gen) == b"".join(_chunks(gen))
    assert worker.summary.taken_over == 1


def test_a_duplicate_delivery_is_harmless(embedded: Stack) -> None:
    """The same buffer announced three times: compacted once, the others needless."""
    gen = embedded.repository.create_generation(ORG)
    embedded.buffer.push_many(ORG, gen, _chunks(gen))
    for _ in range(3):
        embedded.buffer.finish(ORG, gen)
    assert embedded.buffer.events.try_sweep("another worker", 3_600_000)  # no sweep here
    records: list[dict[str, object]] = []
    options = WorkerOptions(concurrency=1, sweep_every=timedelta(hours=1), consumer="w3")
    worker = Worker(
        embedded.buffer, embedded.repository, embedded.config(), options, log=records.append
    )
    _run_until(worker, lambda: len(records) == 3, "three deliveries logged")
    assert sorted(r["outcome"] for r in records) == ["compacted", "needless", "needless"]
    assert stored_bytes(embedded, gen) == b"".join(_chunks(gen))


def _buffer_keys(stack: Stack) -> list[str]:
    """Every buffer key left under the stack's prefix (genbuf's own hashes included),
    on every primary of a cluster; not the marks of releases (release_meta.lua's
    ``{meta}:released``: no buffer, and expiring)."""
    prefix = stack.buffer.prefix.replace(":", "\\:")
    found = []
    for pattern in (prefix + "*:chunks*", "{" + prefix + "*"):
        found += [k.decode() for k in stack.buffer.client.scan_iter(match=pattern, count=1000)]
    return [key for key in found if not key.endswith("}:released")]


@pytest.fixture(params=["servers", "cluster"])
def backend(request: pytest.FixtureRequest) -> Stack:
    """The real Redis, then the real Redis Cluster (each with PostgreSQL)."""
    stack: Stack = request.getfixturevalue(request.param)
    return stack


@pytest.mark.slow
def test_a_fleet_with_a_worker_killed(backend: Stack, tmp_path: Path) -> None:
    """Three worker processes, 200 announced generations and 50 a plain producer left
    idle; one worker is killed with kill -9 mid-run: all 250 byte-exact, no buffer left,
    and the other two stop with exit 0 on SIGTERM. On one Redis and on a 3-primary
    Redis Cluster (the app's untagged keys)."""
    env = backend.env
    args = [
        "worker",
        "--json",
        "--concurrency",
        "4",
        "--idle",
        "1m",
        "--visibility",
        "2s",
        "--sweep-every",
        "1s",
    ]
    logs = [tmp_path / f"worker-{n}.jsonl" for n in range(3)]

    def start(log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # output to a file: a pipe nobody reads would block it
            [GENBUF, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=clean_environ(env)
        )

    def produce(index: int) -> int:
        gen = backend.repository.create_generation(ORG)
        if index < 200:
            backend.buffer.push_many(ORG, gen, _chunks(gen))
            backend.buffer.finish(ORG, gen)
        else:
            key = backend.buffer.key_for(ORG, gen, None)
            backend.buffer.client.rpush(key, *_chunks(gen))
            backend.buffer.client.hset(key + ":meta", "last_chunk_at", "2020-01-01T00:00:00Z")
        return gen

    # the first worker starts alone and is at work (it has logged) before the others
    # start, so that it holds deliveries when it is killed
    fleet = [start(logs[0])]
    gens: list[int] = []

    def first_at_work() -> bool:  # one more generation each look, till it has logged
        assert fleet[0].poll() is None, logs[0].read_text()
        gens.append(produce(len(gens)))
        return bool(logs[0].read_text())

    def unfinished() -> str | None:  # what is left to do; None once every buffer is done
        empty = [g for g in gens if stored_bytes(backend, g) is None]
        keys_left = _buffer_keys(backend)
        if not empty and not keys_left:
            return None
        return f"{len(empty)} rows empty {empty[:5]}, keys left {keys_left[:5]}"

    try:
        wait_until(first_at_work, 30, "the first worker's first compaction", every=0.02)
        fleet += [start(logs[1]), start(logs[2])]
        while len(gens) < 250:
            gens.append(produce(len(gens)))
            if len(gens) >= 100 and fleet[0].poll() is None:
                fleet[0].kill()  # kill -9, in the middle of its work
        # until every buffer is gone: the killed worker's last delivery is taken over
        # only after --visibility, and the sweeper's deliveries come a period apart
        wait_until(
            lambda: unfinished() is None,
            120,
            lambda: f"every buffer compacted and gone: {unfinished()}",
            every=0.2,
        )
        for gen in gens:
            assert stored_bytes(backend, gen) == b"".join(_chunks(gen)), gen
        left = _buffer_keys(backend)
        assert left == [], {k: backend.buffer.client.type(k) for k in left[:5]}
    finally:
        for process in fleet[1:]:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in fleet[1:]]
        fleet[0].wait(timeout=10)
    SUMMARY_LINES.append(
        f"worker fleet [{backend.name}]: {len(gens)} generations byte-exact, no buffer left, "
        f"worker 1 killed (kill -9) at 100, the others' SIGTERM exit codes {codes}"
    )
    assert codes == [0, 0]
    assert fleet[0].returncode == -signal.SIGKILL
    assert logs[0].read_text()  # it was at work when it was killed
    summaries = [json.loads(log.read_text().splitlines()[-1]) for log in logs[1:]]
    assert all(summary["ok"] and summary["failed"] == 0 for summary in summaries), summaries


@pytest.mark.slow
def test_sigterm_finishes_the_compaction_in_hand(servers: Stack, tmp_path: Path) -> None:
    """SIGTERM while a compaction waits before its commit: it commits, the buffer is
    deleted, the entry acknowledged, and the worker exits 0."""
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, _chunks(gen))
    servers.buffer.finish(ORG, gen)
    log = tmp_path / "worker.jsonl"
    hold = Hold("before_commit", tmp_path / "hold")
    worker = subprocess.Popen(
        [*FAULTY_GENBUF, "worker", "--json"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=clean_environ({**servers.env, **hold.env()}),
    )
    hold.wait_reached(worker)
    assert _held(servers.buffer.client, servers.buffer.events.stream) >= 1
    worker.send_signal(signal.SIGTERM)
    hold.release()  # the compaction in hand goes on after the signal
    assert worker.wait(timeout=30) == 0, log.read_text()
    assert stored_bytes(servers, gen) == b"".join(_chunks(gen))
    assert servers.buffer.keyspace.generation_keys(ORG, gen) == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # the worker's first sweep may announce the buffer again: that delivery waits for the
    # row lock, then finds nothing new (needless), in whichever order the two are logged
    outcomes = sorted(record["outcome"] for record in records[:-1])
    assert outcomes in (["compacted"], ["compacted", "needless"]), records
    assert records[-1]["compacted"] == 1
    pending = servers.buffer.client.xpending(servers.buffer.events.stream, "genbuf-workers")
    assert pending["pending"] == 0


def _held(client: redis.Redis, stream: str) -> int:
    """Entries a worker holds (delivered, not acknowledged); 0 before the group exists."""
    try:
        return int(client.xpending(stream, "genbuf-workers")["pending"])
    except redis.exceptions.ResponseError:  # NOGROUP: no worker read yet
        return 0


def test_status_shows_the_worker_queue(embedded: Stack) -> None:
    """status names the queue: entries announced and not done, those a worker holds, the
    workers alive (a heartbeat: not every consumer the group ever saw), the oldest
    entry's age; all done, the queue is empty, and a worker that stopped is not counted."""
    assert json.loads(embedded.cli("status", "--json").stdout)["worker_queue"] is None
    gens = [embedded.repository.create_generation(ORG) for _ in range(3)]
    for gen in gens:
        embedded.buffer.push_many(ORG, gen, _chunks(gen))
        embedded.buffer.finish(ORG, gen)
    events = embedded.buffer.events
    events.ensure_group()
    client = embedded.buffer.client  # one delivery a reader holds, never acknowledged
    assert client.xreadgroup("genbuf-workers", "w0", {events.stream: ">"}, count=1)
    queue = json.loads(embedded.cli("status", "--json").stdout)["worker_queue"]
    assert (queue["entries"], queue["pending"], queue["consumers"]) == (3, 1, 0)
    assert 0 <= queue["oldest_entry_age_seconds"] < 60
    assert "worker queue: 3 entries, 1 held by a worker" in embedded.cli("status").stdout
    options = WorkerOptions(visibility=timedelta(milliseconds=1), consumer="w1")
    worker = Worker(embedded.buffer, embedded.repository, embedded.config(), options)
    seen: list[dict[str, object]] = []
    # (the sweeper announces nothing: every finished buffer has its entry)
    with _running(worker) as running:
        running.wait_for(
            lambda: (
                all(stored_bytes(embedded, g) is not None for g in gens)
                and (backlog := events.backlog()) is not None
                and (backlog.entries, backlog.pending) == (0, 0)
            )
        )
        seen.append(json.loads(embedded.cli("status", "--json").stdout)["worker_queue"])
        assert "1 worker alive" in embedded.cli("status").stdout
    assert (seen[0]["entries"], seen[0]["pending"], seen[0]["consumers"]) == (0, 0, 1)
    queue = json.loads(embedded.cli("status", "--json").stdout)["worker_queue"]
    assert (queue["entries"], queue["pending"], queue["consumers"]) == (0, 0, 0)
    assert client.xpending(events.stream, "genbuf-workers")["pending"] == 0  # taken over


class _Running:
    """A Worker run in a thread; ``wait_for`` polls a condition while the worker lives
    (a worker that died fails the test at once, with its exception)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as error:  # the test reports it
            self.error = error

    def alive(self) -> bool:
        """Whether the worker still runs."""
        return self.thread.is_alive()

    def wait_for(
        self, done: Callable[[], bool], timeout: float = 30, what: str = "the condition"
    ) -> None:
        """Poll ``done`` until true; fail if the worker died or the time ran out."""

        def while_alive() -> bool:
            assert self.thread.is_alive(), f"the worker died: {self.error!r}"
            return done()

        wait_until(while_alive, timeout, what)


@contextmanager
def _running(worker: Worker) -> Iterator[_Running]:
    """Run ``worker`` in a thread for the block; stopped (and joined) after it."""
    running = _Running(worker)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(timeout=60)
    assert not running.thread.is_alive()
    assert running.error is None, repr(running.error)


def _blocked_readers(client: redis.Redis) -> int:
    """Clients of the server blocked in XREADGROUP."""
    return sum(
        1 for c in client.client_list() if c.get("cmd") == "xreadgroup" and "b" in c.get("flags")
    )


def test_a_worker_goes_on_when_its_stream_is_deleted(servers: Stack) -> None:
    """The stream deleted under a worker blocked on it (Redis 7 answers `UNBLOCKED the
    stream key no longer exists`): one log line, the group is created again, and what is
    announced afterwards is compacted. The worker never stops."""
    records: list[dict[str, object]] = []
    options = WorkerOptions(concurrency=2, sweep_every=timedelta(hours=1), consumer="w-del")
    worker = Worker(servers.buffer, servers.repository, servers.config(), options, records.append)
    client = servers.buffer.client
    with _running(worker) as running:
        running.wait_for(lambda: _blocked_readers(client) == 1)
        client.delete(servers.buffer.events.stream)
        running.wait_for(lambda: any(r["outcome"] == "interrupted" for r in records))
        gen = servers.repository.create_generation(ORG)
        servers.buffer.push_many(ORG, gen, _chunks(gen))
        servers.buffer.finish(ORG, gen)
        running.wait_for(lambda: stored_bytes(servers, gen) is not None)
    assert stored_bytes(servers, gen) == b"".join(_chunks(gen))
    (said,) = [r for r in records if r["outcome"] == "interrupted"]
    assert "UNBLOCKED the stream key no longer exists" in str(said["message"])
    assert worker.summary.interruptions == 1 and worker.summary.compacted == 1


@pytest.fixture(params=["embedded", "servers"])
def single(request: pytest.FixtureRequest) -> Stack:
    """fakeredis + SQLite, then the real Redis + PostgreSQL."""
    stack: Stack = request.getfixturevalue(request.param)
    return stack


def test_a_malformed_event_is_parked_and_the_valid_ones_behind_it_compacted(
    single: Stack,
) -> None:
    """`XADD … org abc gen 1` (read once by a worker that died) and an entry with gen 0,
    ahead of valid ones: both are parked (acknowledged, kept on the parked stream with
    why, counted by status and metrics, one log line each); every valid one is compacted,
    no worker stops."""
    buffer = single.buffer
    client = buffer.client
    stream = buffer.events.stream
    buffer.events.ensure_group()
    client.xadd(stream, {"org": "abc", "gen": "1"})
    client.xreadgroup("genbuf-workers", "dead", {stream: ">"}, count=1)  # never acked
    client.xadd(stream, {"org": str(ORG), "gen": "0", "idle": "1"})
    gens = [single.repository.create_generation(ORG) for _ in range(4)]
    for gen in gens:
        buffer.push_many(ORG, gen, _chunks(gen))
        buffer.finish(ORG, gen)
    records: list[dict[str, object]] = []
    # short enough that the dead consumer's entry is taken over within the wait
    options = WorkerOptions(concurrency=2, visibility=timedelta(seconds=3), consumer="w-bad")
    worker = Worker(buffer, single.repository, single.config(), options, records.append)
    parked_key = keys.parked_events_key(buffer.prefix)
    with _running(worker) as running:
        running.wait_for(
            lambda: (
                all(stored_bytes(single, g) is not None for g in gens)
                and client.xlen(parked_key) == 2
                and client.xlen(stream) == 0
            )
        )
        status = json.loads(single.cli("status", "--json").stdout)["worker_queue"]
    for gen in gens:
        assert stored_bytes(single, gen) == b"".join(_chunks(gen))
    parked = [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(parked_key)]
    assert sorted(json.loads(p["fields"])["gen"] for p in parked) == ["0", "1"]
    assert all("must be" in p["reason"] and p["entry"] for p in parked), parked
    assert worker.summary.parked == 2 and worker.summary.taken_over == 0
    lines = [r for r in records if r["outcome"] == "parked"]
    assert len(lines) == 2 and all(parked_key in str(r["message"]) for r in lines)
    assert status["parked"] == 2
    exposed = single.cli("metrics").stdout
    assert "genbuf_worker_events_parked 2.0" in exposed.splitlines()
    assert client.xpending(stream, "genbuf-workers")["pending"] == 0


def test_a_producer_that_only_sets_finished_at_is_found_within_one_sweep(
    embedded: Stack,
) -> None:
    """A producer that marks `finished_at` and announces nothing (the app's own HSET) is
    compacted by the first sweep after the mark, not a --visibility (5 min) later."""
    options = WorkerOptions(sweep_every=timedelta(milliseconds=500), consumer="w-fin")
    worker = Worker(embedded.buffer, embedded.repository, embedded.config(), options)
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.key_for(ORG, gen, None)
    embedded.buffer.push_many(ORG, gen, _chunks(gen))
    with _running(worker) as running:
        running.wait_for(lambda: worker.summary.sweeps >= 1)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        embedded.buffer.client.hset(keys.meta_key(key), "finished_at", stamp)
        marked_at = worker.summary.sweeps
        running.wait_for(lambda: stored_bytes(embedded, gen) is not None, timeout=20)
        sweeps = worker.summary.sweeps - marked_at
    assert stored_bytes(embedded, gen) == b"".join(_chunks(gen))
    assert sweeps <= 2, sweeps  # the sweep under way when it was marked, and the next


def test_a_sweep_compacts_an_orphan_once_its_row_exists(embedded: Stack) -> None:
    """A finished buffer whose row the app commits late: the worker sets it aside (no
    row), and the first sweep after the row exists compacts it (it was skipped for good
    and its chunks expired)."""
    options = WorkerOptions(sweep_every=timedelta(milliseconds=300), consumer="w-orphan")
    worker = Worker(embedded.buffer, embedded.repository, embedded.config(), options)
    late = 987_402
    embedded.buffer.push_many(ORG, late, _chunks(late))
    embedded.buffer.finish(ORG, late)
    with _running(worker) as running:
        running.wait_for(lambda: worker.summary.orphaned == 1)
        embedded.repository.create_generation(ORG, generation_id=late)
        running.wait_for(lambda: stored_bytes(embedded, late) is not None, timeout=20)
    assert stored_bytes(embedded, late) == b"".join(_chunks(late))


def test_the_sweep_applies_the_fleet_idle_rule_whoever_holds_the_lock(embedded: Stack) -> None:
    """Two workers, --idle 30m and --idle 3s: the sweep holder applies the fleet's rule
    (the shortest --idle of the live workers), so a plain list quiet for 20 s is
    compacted although the --idle 30m worker holds the sweep lock when the other starts."""
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.key_for(ORG, gen, None)
    embedded.buffer.client.rpush(key, *_chunks(gen))
    quiet = (datetime.now(UTC) - timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    embedded.buffer.client.hset(keys.meta_key(key), "last_chunk_at", quiet)
    slow = Worker(
        embedded.buffer,
        embedded.repository,
        embedded.config(),
        WorkerOptions(idle=timedelta(minutes=30), sweep_every=timedelta(seconds=2), consumer="s"),
    )
    quick = Worker(
        embedded.buffer,
        embedded.repository,
        embedded.config(),
        WorkerOptions(idle=timedelta(seconds=3), sweep_every=timedelta(hours=1), consumer="q"),
    )
    lock = keys.sweeper_lock_key(embedded.buffer.prefix)
    with _running(slow) as first:
        first.wait_for(lambda: slow.summary.sweeps >= 1)
        assert embedded.buffer.client.get(lock) == b"s"  # the 30m worker holds the lock
        with _running(quick) as second:
            second.wait_for(lambda: stored_bytes(embedded, gen) is not None, timeout=20)
    assert stored_bytes(embedded, gen) == b"".join(_chunks(gen))
    assert slow.summary.announced_by_sweeps + quick.summary.announced_by_sweeps == 1


def _command_calls(client: redis.Redis) -> Counter[str]:
    """Calls of each command the server counted (INFO commandstats)."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def test_entries_that_wait_are_compacted_in_batches(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries waiting when the worker reads are compacted a batch (up to BATCH) to a
    transaction, full batches first: 20 announced before the worker starts are 3
    transactions (8, 8, 4), not 20. All byte-exact, no buffer left."""
    gens = [stack.repository.create_generation(ORG) for _ in range(20)]
    for gen in gens:
        stack.buffer.push_many(ORG, gen, _chunks(gen))
        stack.buffer.finish(ORG, gen)
    batches = count_batches(monkeypatch)
    options = WorkerOptions(concurrency=4, sweep_every=timedelta(hours=1), consumer="w-batch")
    worker = Worker(stack.buffer, stack.repository, stack.config(), options)
    _run_until(
        worker,
        lambda: all(stored_bytes(stack, g) is not None for g in gens),
        "every buffer compacted",
    )
    for gen in gens:
        assert stored_bytes(stack, gen) == b"".join(_chunks(gen)), gen
        assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
    assert sorted(batches, reverse=True) == [8, 8, 4], batches
    assert sum(batches) == len(gens) and worker.summary.compacted == len(gens)


def test_a_partly_busy_worker_does_not_poll(servers: Stack) -> None:
    """A worker with one compaction in hand and a free slot waits on the server: over
    three seconds it sends a few blocking XREADGROUPs and at most one XAUTOCLAIM (it
    sent about 20 of each a second before), counted by the server's commandstats."""
    held, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "before_commit":
            held.set()
            release.wait(30)

    config = servers.config(faults=FaultPlan(mode="raise", on_step=hold))
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, _chunks(gen))
    servers.buffer.finish(ORG, gen)
    options = WorkerOptions(concurrency=2, sweep_every=timedelta(hours=1), consumer="w-poll")
    worker = Worker(servers.buffer, servers.repository, config, options)
    client = servers.buffer.client
    with _running(worker) as running:
        running.wait_for(held.is_set)
        before = _command_calls(client)
        release.wait(3)  # three seconds of a worker with one slot busy and one free
        after = _command_calls(client)
        release.set()
        running.wait_for(lambda: stored_bytes(servers, gen) is not None)
    sent = after - before
    assert sent["xreadgroup"] <= 6 and sent["xautoclaim"] <= 1, sent
    assert stored_bytes(servers, gen) == b"".join(_chunks(gen))


def test_doctor_takes_live_workers_for_someone_who_compacts(embedded: Stack) -> None:
    """A worker-only deployment (no compact-pending cron): while a worker beats, doctor's
    "someone compacts" check is ok and a `workers` check names it; once it stopped
    cleanly, no worker is counted; a worker killed (its beat stale) fails the check."""

    def checks() -> dict[str, dict[str, str]]:
        report = json.loads(embedded.cli("doctor", "--json").stdout)
        return {c["name"]: c for c in report["checks"]}

    assert checks()["cron compact-pending"]["status"] == "warn"  # nobody compacts
    worker = Worker(
        embedded.buffer,
        embedded.repository,
        embedded.config(),
        WorkerOptions(sweep_every=timedelta(hours=1), consumer="w-doc"),
    )
    with _running(worker) as running:
        fleet = keys.fleet_key(embedded.buffer.prefix)
        running.wait_for(lambda: bool(embedded.buffer.client.hexists(fleet, "w-doc")))  # beats
        during = checks()
    assert during["cron compact-pending"]["status"] == "ok", during["cron compact-pending"]
    assert "1 live worker" in during["cron compact-pending"]["message"]
    assert during["workers"]["status"] == "ok" and "w-doc" in during["workers"]["message"]
    after = checks()
    assert after["cron compact-pending"]["status"] == "warn" and "workers" not in after
    embedded.buffer.fleet.beat(WorkerBeat("killed-1", time.time() - 120, None, 60.0, 300.0, 4))
    killed = checks()
    assert (
        killed["workers"]["status"] == "fail" and "no worker alive" in killed["workers"]["message"]
    )
    assert killed["cron compact-pending"]["status"] == "warn"


def test_a_worker_does_not_take_over_its_own_slow_compaction(servers: Stack) -> None:
    """A compaction held past the visibility timeout comes back to its own worker's
    XAUTOCLAIM (the claim only renews it): it runs once, where it already runs, and is
    no entry taken over."""
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, _chunks(gen))
    servers.buffer.finish(ORG, gen)
    assert servers.buffer.events.try_sweep("another worker", 3_600_000)  # no sweep here
    held, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "before_commit":
            held.set()
            assert release.wait(60), "never released"

    config = servers.config(faults=FaultPlan(on_step=hold))
    records: list[dict[str, object]] = []
    # free threads beside the held one: a worker that took its own entry over would run
    # it again there (and wait on the row lock), not stop claiming
    options = WorkerOptions(
        concurrency=3, visibility=timedelta(milliseconds=200), consumer="w-slow"
    )
    worker = Worker(servers.buffer, servers.repository, config, options, records.append)
    claims: list[int] = []  # entries each claim brought
    take_over = worker.events.take_over

    def counted(*args: object, **kwargs: object) -> object:
        taken = take_over(*args, **kwargs)  # type: ignore[arg-type]
        claims.append(len(taken.events))
        return taken

    worker.events.take_over = counted  # type: ignore[method-assign,assignment]
    with _running(worker) as running:
        running.wait_for(held.is_set)
        # the held entry idles past the visibility and comes back to the worker's claims
        running.wait_for(lambda: len(claims) >= 3, what="claims while the entry is held")
        release.set()
        running.wait_for(lambda: len(records) >= 1 and stored_bytes(servers, gen) is not None)
    assert stored_bytes(servers, gen) == b"".join(_chunks(gen))
    assert [r["outcome"] for r in records] == ["compacted"], records
    assert worker.summary.taken_over == 0 and worker.summary.compacted == 1


def _backends(application: str) -> list[int]:
    """The pids of the PostgreSQL backends of the connections named ``application``."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


@pytest.mark.parametrize("batch", [1, 8])
def test_compactions_an_outage_stopped_are_run_again_without_a_take_over(
    servers: Stack, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL ends every backend of a worker (pg_terminate_backend, as a failover or an
    admin does) while its compactions are in flight (batch 1: one on each thread; 8: all
    in one batch's transaction): each fails as an outage, and the worker runs its entry
    again after the outage pause, rather than leaving it pending for a take-over
    --visibility (10 minutes here) later. Every generation is compacted byte-exact
    without a take-over, every entry acknowledged."""
    monkeypatch.setattr("genbuffer.engine.worker.BATCH", batch)
    concurrency = 4
    in_flight = concurrency if batch == 1 else 1  # transactions held
    gens = [servers.repository.create_generation(ORG) for _ in range(concurrency)]
    for gen in gens:
        servers.buffer.push_many(ORG, gen, _chunks(gen))
        servers.buffer.finish(ORG, gen)
    assert servers.buffer.events.try_sweep("another worker", 3_600_000)  # no sweep here
    arrived: list[str] = []
    counting = threading.Lock()
    held, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:  # every thread waits before its COMMIT, the first time
        if step == "before_commit" and not release.is_set():
            with counting:
                arrived.append(threading.current_thread().name)
                if len(arrived) == in_flight:
                    held.set()
            assert release.wait(60), "never released"

    # the worker's own engine, its connections named: the test's reads are not ended
    application = f"genbuf-outage-{uuid.uuid4().hex[:12]}"
    url = make_url(servers.env["DATABASE_URL"]).update_query_dict({"application_name": application})
    repository = Repository(
        make_engine(url.render_as_string(hide_password=False)), servers.env["DATABASE_URL"]
    )
    config = servers.config(faults=FaultPlan(on_step=hold))
    records: list[dict[str, object]] = []
    options = WorkerOptions(
        concurrency=concurrency,
        visibility=timedelta(minutes=10),
        sweep_every=timedelta(hours=1),
        consumer="w-outage",
    )
    worker = Worker(servers.buffer, repository, config, options, records.append)
    client, stream = servers.buffer.client, servers.buffer.events.stream
    try:
        with _running(worker) as running:
            running.wait_for(held.is_set, what="every compaction held before its COMMIT")
            ended = _backends(application)
            assert len(ended) >= in_flight, ended
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                for pid in ended:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            running.wait_for(
                lambda: not set(ended) & set(_backends(application)), what="the backends to end"
            )
            release.set()
            # far below the visibility: only a run again by this worker gets there
            running.wait_for(
                lambda: (
                    all(stored_bytes(servers, g) is not None for g in gens)
                    and _held(client, stream) == 0
                ),
                timeout=60,
                what="every generation compacted and acknowledged",
            )
    finally:
        repository.engine.dispose()
    for gen in gens:
        assert stored_bytes(servers, gen) == b"".join(_chunks(gen)), gen
        assert servers.buffer.keyspace.generation_keys(ORG, gen) == []
    outages = [r for r in records if r["outcome"] == "outage"]
    if batch == 1:  # (a batch's transaction that fails is run one by one at once)
        assert {r["generation_id"] for r in outages} == set(gens), records
    assert worker.summary.taken_over == 0, worker.summary
    assert worker.summary.compacted == len(gens), worker.summary


@pytest.mark.backends("servers")
def test_a_finish_is_one_round_trip_its_mark_before_its_announcement(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one server the producer's finish() sends the mark (push.lua, step finish) and
    the announcement (XADD, EXPIRE) in one pipeline, the mark first: a worker that reads
    the entry sees the stream finished. After SCRIPT FLUSH the mark still happens."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, [b"x"]).key
    stack.buffer.finish(ORG, gen)  # the script is loaded before its first pipeline
    sent: list[bytes] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: redis.connection.Connection, command: Any, **kwargs: Any) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))
        original(self, command, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    stack.buffer.client.hdel(keys.meta_key(key), "finished_at")
    sent.clear()
    stack.buffer.finish(ORG, gen)
    assert len(sent) == 1 and sent[0].index(b"EVALSHA") < sent[0].index(b"XADD"), sent
    assert stack.buffer.client.hexists(keys.meta_key(key), "finished_at")
    stack.buffer.client.hdel(keys.meta_key(key), "finished_at")
    stack.buffer.client.script_flush()
    stack.buffer.finish(ORG, gen)
    assert stack.buffer.client.hexists(keys.meta_key(key), "finished_at")
    assert len(stack.buffer.client.xrange(stack.buffer.events.stream)) == 3


def _announced(stack: Stack, count: int) -> list[int]:
    """``count`` generations pushed and finished (each announced once)."""
    gens = []
    for _ in range(count):
        gen = stack.repository.create_generation(ORG)
        stack.buffer.push_many(ORG, gen, _chunks(gen))
        stack.buffer.finish(ORG, gen)
        gens.append(gen)
    return gens


def _exact_once(stack: Stack, gens: list[int]) -> None:
    """Every row byte-exact, with one `persisted` ledger row each (none written twice)."""
    for gen in gens:
        assert stored_bytes(stack, gen) == b"".join(_chunks(gen)), gen
    with stack.repository.engine.connect() as connection:
        found = connection.exec_driver_sql(
            "SELECT generation_id, count(*) FROM generation_compactions "
            "WHERE result = 'persisted' GROUP BY generation_id"
        )
        ledger = {int(gen): int(n) for gen, n in found}
    assert {gen: ledger.get(gen) for gen in gens} == dict.fromkeys(gens, 1), ledger


def _all_done(stack: Stack) -> bool:
    """No buffer left, and no entry in the stream (none pending)."""
    stream = stack.buffer.events.stream
    return (
        not _buffer_keys(stack)
        and not stack.buffer.client.xlen(stream)
        and not _held(stack.buffer.client, stream)
    )


def _spawn_worker(
    stack: Stack, log: Path, *args: str, faults: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A `genbuf worker --json` process (with fault hooks when ``faults`` is given)."""
    command = [GENBUF] if faults is None else FAULTY_GENBUF
    return subprocess.Popen(  # output to a file: a pipe nobody reads would block it
        [*command, "worker", "--json", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=clean_environ({**stack.env, **(faults or {})}),
    )


def _quiet(log: Path) -> None:
    """A worker's log holds compactions and needless deliveries only, and its summary."""
    text = log.read_text()
    assert "Traceback" not in text and "deadlock" not in text, text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(line.get("outcome") in (None, "compacted", "needless") for line in lines), lines


@pytest.mark.parametrize(
    ("step", "partly_trimmed"), [("after_commit", False), ("before_ack", True)]
)
def test_a_worker_killed_after_its_batch_committed(
    servers: Stack, tmp_path: Path, step: str, partly_trimmed: bool
) -> None:
    """kill -9 of a worker once its batch of 8 committed, before its trims (or, as a
    pipeline cut short would leave them, half of them done): the next worker finishes
    every row byte-exact with one ledger row each, every buffer and entry gone."""
    gens = _announced(servers, 8)
    dying_log = tmp_path / "dying.jsonl"
    dying = _spawn_worker(
        servers, dying_log, "--concurrency", "1", faults={"GENBUFFER_CRASH_AT": step}
    )
    assert dying.wait(timeout=60) == -signal.SIGKILL, dying_log.read_text()
    for gen in gens:  # the batch committed whole, nothing trimmed
        assert stored_bytes(servers, gen) == b"".join(_chunks(gen)), gen
        key = servers.buffer.key_for(ORG, gen, None)
        assert servers.buffer.client.llen(key) == len(_chunks(gen))
    if partly_trimmed:
        acks = []
        for gen in gens[::2]:
            row = servers.repository.get_generation(gen)
            assert row is not None
            record = RowRecord.from_metadata(row.metadata)
            assert record is not None
            acks.append((servers.buffer.key_for(ORG, gen, None), record.stream_id, record.offset))
        servers.buffer.protocol.acknowledge_many(acks, True)
    log = tmp_path / "next.jsonl"
    worker = _spawn_worker(servers, log, "--concurrency", "2", "--visibility", "1s")
    try:
        wait_until(lambda: _all_done(servers), 30, lambda: f"all done: {log.read_text()}")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    assert code == 0, log.read_text()
    _exact_once(servers, gens)
    _quiet(log)


def _lock_waits(stack: Stack) -> int:
    """Sessions of the test's database waiting on a lock."""
    with stack.repository.engine.connect() as connection:
        return int(
            connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).scalar_one()
        )


def _owned(stack: Stack, consumer: str) -> int:
    """Entries ``consumer`` holds."""
    return len(
        stack.buffer.client.xpending_range(
            stack.buffer.events.stream, "genbuf-workers", "-", "+", 100, consumername=consumer
        )
    )


@pytest.mark.parametrize("end", ["commits", "killed"])
def test_three_workers_with_overlapping_batches(servers: Stack, tmp_path: Path, end: str) -> None:
    """40 generations, each announced twice (the duplicates queued after all of them).
    Worker 1 holds its batch of 8 before COMMIT (their rows locked); workers 2 and 3
    take its entries over (--visibility 1s) and read the duplicates, batches of theirs
    waiting on its locks. Then it commits (or is killed -9): every row byte-exact, one
    persisted ledger row each, no history row, no deadlock, no failure."""
    gens = _announced(servers, 40)
    for gen in gens:
        servers.buffer.events.announce(ORG, gen)
    hold = Hold("before_commit", tmp_path / "hold")
    common = ("--visibility", "1s", "--sweep-every", "1h")
    logs = [tmp_path / f"w{n}.jsonl" for n in range(3)]
    first = _spawn_worker(servers, logs[0], "--concurrency", "1", *common, faults=hold.env())
    fleet = [first]
    try:
        hold.wait_reached(first)
        fleet += [_spawn_worker(servers, log, "--concurrency", "2", *common) for log in logs[1:]]
        held = f"{socket.gethostname()}-{first.pid}"
        wait_until(
            lambda: _owned(servers, held) == 0 and _lock_waits(servers) >= 1,
            30,
            lambda: (
                f"worker 1's entries taken over ({_owned(servers, held)} left), a batch waiting"
            ),
        )
        if end == "killed":
            first.kill()
        hold.release()
        wait_until(lambda: _all_done(servers), 60, "every buffer and entry done")
    finally:
        hold.release()
        for worker in fleet:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=60) for worker in fleet]
    assert codes == [-signal.SIGKILL if end == "killed" else 0, 0, 0], codes
    _exact_once(servers, gens)
    with servers.repository.engine.connect() as connection:
        history = connection.exec_driver_sql("SELECT count(*) FROM generation_artifact_history")
        assert history.scalar_one() == 0
    for log in logs[1:] if end == "killed" else logs:
        _quiet(log)
    summaries = [json.loads(log.read_text().splitlines()[-1]) for log in logs[1:]]
    assert sum(summary["taken_over"] for summary in summaries) >= 8, summaries


def _readers_on_the_streams_node(stack: Stack) -> int:
    """Clients blocked in XREADGROUP where the stream lives (its node on a cluster)."""
    client = stack.buffer.client
    if isinstance(client, redis.RedisCluster):
        node = client.get_node_from_key(stack.buffer.events.stream)
        return _blocked_readers(redis.Redis(host=node.host, port=node.port))
    return _blocked_readers(client)


@pytest.mark.parametrize("fault", ["XGROUP DESTROY", "DEL"])
def test_a_read_carrying_acknowledgements_that_the_server_ends(backend: Stack, fault: str) -> None:
    """The read after a compaction carries its acknowledgement (XACK, XDEL, XREADGROUP
    in one pipeline). The group destroyed (or the stream deleted) while that read
    blocks: redis-py words the error "Command # 3 (XREADGROUP …) of pipeline caused
    error: NOGROUP …". It is an interruption like any other (the group created again
    at once, the next announcement compacted), not a refusal logged every second
    until the next take-over look (30 s with the default --visibility)."""
    records: list[dict[str, object]] = []
    options = WorkerOptions(
        concurrency=1,
        block=timedelta(seconds=2),
        sweep_every=timedelta(hours=1),
        consumer="w-acks",
    )
    worker = Worker(backend.buffer, backend.repository, backend.config(), options, records.append)
    client = backend.buffer.client
    stream = backend.buffer.events.stream
    with _running(worker) as running:
        (first,) = _announced(backend, 1)
        running.wait_for(  # compacted; the read that acknowledged it now blocks
            lambda: (
                stored_bytes(backend, first) is not None
                and client.xlen(stream) == 0
                and _readers_on_the_streams_node(backend) == 1
            )
        )
        if fault == "DEL":
            client.delete(stream)
        else:
            client.xgroup_destroy(stream, "genbuf-workers")
        (second,) = _announced(backend, 1)
        running.wait_for(lambda: stored_bytes(backend, second) is not None, 10)
    said = [r for r in records if r["outcome"] in ("interrupted", "error")]
    assert [r["outcome"] for r in said] == ["interrupted"], said


def test_cluster_workers_outlive_their_group_and_stream(cluster: Stack) -> None:
    """Two workers on the Redis Cluster (each read straight to the stream's node): the
    group destroyed while both block, then while a compaction is in flight; the stream
    deleted while one is in flight; the stream replaced by a string for a while; nine
    malformed entries and two with hostile extras. Every valid generation compacted
    byte-exact once, the nine parked, no error but the string's, no worker stops."""
    stream = cluster.buffer.events.stream
    client = cluster.buffer.client
    gate, at_gate = threading.Event(), threading.Event()
    gate.set()

    def on_step(step: str) -> None:
        if step == "before_commit" and not gate.is_set():
            at_gate.set()
            gate.wait(60)

    records: list[dict[str, object]] = []
    options = WorkerOptions(visibility=timedelta(seconds=2), sweep_every=timedelta(hours=1))
    workers = [
        Worker(
            GenerationBuffer.from_settings(cluster.settings),
            cluster.repository,
            cluster.config(faults=FaultPlan(on_step=on_step)),
            replace(options, consumer=f"w{n}"),
            records.append,
        )
        for n in range(2)
    ]
    gens: list[int] = []

    def done() -> bool:
        return all(stored_bytes(cluster, g) is not None for g in gens) and not _buffer_keys(cluster)

    def in_flight_when(fault: Callable[[], object]) -> None:
        gate.clear()
        at_gate.clear()
        gens.extend(_announced(cluster, 1))
        running.wait_for(at_gate.is_set)
        fault()
        gate.set()

    with _running(workers[0]) as running, _running(workers[1]) as other:

        def second_died() -> bool:  # running.wait_for fails if the first dies; this, the second
            assert other.thread.is_alive(), repr(other.error)
            return False

        running.wait_for(lambda: second_died() or _readers_on_the_streams_node(cluster) == 2)
        client.xgroup_destroy(stream, "genbuf-workers")
        gens.extend(_announced(cluster, 6))
        running.wait_for(lambda: second_died() or done())
        in_flight_when(lambda: client.xgroup_destroy(stream, "genbuf-workers"))
        gens.extend(_announced(cluster, 4))
        running.wait_for(lambda: second_died() or done())
        in_flight_when(lambda: client.delete(stream))
        gens.extend(_announced(cluster, 4))
        running.wait_for(lambda: second_died() or done())
        client.delete(stream)
        client.set(stream, "not a stream")
        running.wait_for(lambda: any(r["outcome"] == "error" for r in records))
        client.delete(stream)
        gens.extend(_announced(cluster, 2))
        for fields in (
            {"org": "abc", "gen": "1"},
            {"org": str(ORG)},
            {"gen": "5"},
            {"org": str(ORG), "gen": "-3"},
            {"org": str(ORG), "gen": "9" * 40},
            {"org": str(ORG), "gen": "1", "scenario": "0"},
            {"org": b"\xff\xfe", "gen": b"\x00\x01"},
            {"org": "٣", "gen": "٣"},  # digits, not ASCII ones
            {"x": "y"},
        ):
            client.xadd(stream, fields)  # type: ignore[arg-type]
        other_key = f"{cluster.buffer.prefix}org:1:generation:1:chunks"
        client.xadd(stream, {"org": ORG, "gen": gens[0], "key": "x" * 10000, "why": "z" * 100})
        client.xadd(stream, {"org": ORG, "gen": gens[1], "key": other_key})
        gens.extend(_announced(cluster, 2))
        parked = keys.parked_events_key(cluster.buffer.prefix)
        running.wait_for(lambda: second_died() or (done() and client.xlen(parked) == 9))
        assert other.thread.is_alive()
    _exact_once(cluster, gens)
    errors = [r for r in records if r["outcome"] in ("error", "outage", "failed", "orphaned")]
    assert errors and all("WRONGTYPE" in str(r["message"]) for r in errors), errors


def test_an_events_reason_is_one_the_sweeper_gives_or_none(embedded: Stack) -> None:
    """An entry's `why` ends up in the row's metadata (`buffer.provisional`) when an open
    buffer is compacted: only the sweeper's reasons are taken, any other text (10 KB
    of it, say) is dropped."""
    events = embedded.buffer.events
    events.ensure_group()
    client = embedded.buffer.client
    client.xadd(events.stream, {"org": ORG, "gen": 1, "why": "x" * 10_000})
    client.xadd(events.stream, {"org": ORG, "gen": 2, "why": "at_risk"})
    client.xadd(events.stream, {"org": ORG, "gen": 3, "idle": "1", "why": "<script>"})
    delivery = events.read("c1", 10, 10)
    assert [event.why for event in delivery.events] == [None, "at_risk", "idle"]


@pytest.mark.backends("servers")
def test_an_announcement_out_before_its_mark_loses_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finish() after SCRIPT FLUSH: its pipeline's mark is refused (NOSCRIPT) while the
    announcement goes out, and the mark sent alone then fails (a restart): a worker
    reads the announcement of a stream not marked finished. Nothing is lost or left;
    the producer's retried finish() is compacted (or needless)."""
    from genbuffer.errors import GenbufferError  # noqa: PLC0415
    from genbuffer.redis.scripts import ScriptRunner  # noqa: PLC0415

    warm = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, warm, _chunks(warm))
    stack.buffer.finish(ORG, warm)  # push.lua loaded before finish()'s pipelines
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.push_many(ORG, gen, _chunks(gen)).key
    stack.buffer.client.script_flush()
    original = ScriptRunner.run

    def down(self: ScriptRunner, call: Any) -> Any:
        if call.SCRIPT == "push":
            raise redis.exceptions.ConnectionError("Connection reset by peer")
        return original(self, call)

    monkeypatch.setattr(ScriptRunner, "run", down)
    with pytest.raises(GenbufferError):
        stack.buffer.finish(ORG, gen)
    monkeypatch.undo()
    assert not stack.buffer.client.hexists(keys.meta_key(key), "finished_at")
    assert (ORG, gen) in stack.buffer.events.queued()  # announced without its mark
    records: list[dict[str, object]] = []
    options = WorkerOptions(concurrency=1, sweep_every=timedelta(hours=1), consumer="m1")
    worker = Worker(stack.buffer, stack.repository, stack.config(), options, log=records.append)
    _run_until(worker, lambda: len(records) == 2, "both announcements handled")
    stack.buffer.finish(ORG, gen)  # the producer's retry
    worker = Worker(stack.buffer, stack.repository, stack.config(), options, log=records.append)
    _run_until(worker, lambda: len(records) == 3, "the retry handled")
    _exact_once(stack, [warm, gen])
    assert _all_done(stack), _buffer_keys(stack)


@pytest.mark.parametrize("held_by", ["string", "hash"])
def test_a_sweep_lock_that_never_expires_stops_sweeps_for_one_period_only(
    stack: Stack, held_by: str
) -> None:
    """The sweep lock holding a value without an expiry (set by hand, another type of
    value: nothing genbuf writes) stopped every sweep of the fleet for good, silently
    (found by a month-long run: a producer's finished_at, buffers about to expire and
    late rows were never announced; status and doctor said nothing). It lasts one period
    more now, then the fleet sweeps again."""
    lock = keys.sweeper_lock_key(stack.buffer.prefix)
    client = stack.buffer.client
    if held_by == "string":
        client.set(lock, "paused by hand")
    else:
        client.hset(lock, "x", "y")
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    stack.buffer.push_many(ORG, gen, _chunks(gen))
    stack.buffer.client.hset(keys.meta_key(key), "finished_at", "2026-01-01T00:00:00Z")
    options = WorkerOptions(sweep_every=timedelta(milliseconds=300), consumer="w-lock")
    worker = Worker(stack.buffer, stack.repository, stack.config(), options)
    _run_until(worker, lambda: stored_bytes(stack, gen) is not None, "a sweep despite the lock")
    assert stored_bytes(stack, gen) == b"".join(_chunks(gen))
    assert worker.summary.sweeps >= 1


def test_a_fleet_hash_of_another_type_does_not_stop_the_sweeps(stack: Stack) -> None:
    """A string where the fleet's heartbeat hash lives made every sweep fail before it
    began (the fleet's rule is read from the hash): one error line a second, for good,
    and nothing swept (found by a month-long run). The sweep applies this worker's own
    rule then, and says so once a sweep period at most."""
    client = stack.buffer.client
    client.set(keys.fleet_key(stack.buffer.prefix), "not a hash")
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    stack.buffer.push_many(ORG, gen, _chunks(gen))
    client.hset(keys.meta_key(key), "finished_at", "2026-01-01T00:00:00Z")
    records: list[dict[str, object]] = []
    options = WorkerOptions(sweep_every=timedelta(seconds=2), consumer="w-fleet")
    worker = Worker(stack.buffer, stack.repository, stack.config(), options, log=records.append)
    with _running(worker) as running:
        running.wait_for(lambda: stored_bytes(stack, gen) is not None, 20, "a sweep")
        started = time.monotonic()
        running.wait_for(lambda: time.monotonic() - started > 1.5, 5, "1.5 s more")
    assert stored_bytes(stack, gen) == b"".join(_chunks(gen))
    errors = [r for r in records if r["outcome"] == "error"]
    assert errors and all("WRONGTYPE" in str(r["message"]) for r in errors), errors
    assert len(errors) <= 2, errors  # a line a sweep (every 2 s), not one a second


def test_a_huge_field_of_a_malformed_event_is_not_copied_into_its_log_line(
    embedded: Stack,
) -> None:
    """A malformed event whose `org` is 1 MB of NUL bytes was logged (parked) in one
    line of 5 MB, its value escaped in full (found by a month-long run: an entry a minute
    fills a disk). The line shows the value's start and its length."""
    events = embedded.buffer.events
    events.ensure_group()
    client = embedded.buffer.client
    client.xadd(events.stream, {"org": "\x00" * 1_000_000, "gen": 1})
    client.xadd(events.stream, {"org": ORG, "gen": "9" * 100_000})
    records: list[dict[str, object]] = []
    options = WorkerOptions(sweep_every=timedelta(hours=1), consumer="w-huge")
    worker = Worker(
        embedded.buffer, embedded.repository, embedded.config(), options, log=records.append
    )
    _run_until(worker, lambda: worker.summary.parked == 2, "both entries parked")
    lines = [json.dumps(r) for r in records if r["outcome"] == "parked"]
    assert len(lines) == 2 and all(len(line) < 600 for line in lines), [len(x) for x in lines]
    assert "characters)" in lines[0] and "characters)" in lines[1]
