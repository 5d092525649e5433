"""genbuf worker: announced and swept buffers compacted by a fleet, kill -9 and SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from genbuffer.redis.events import Backlog
from genbuffer.worker import Worker, WorkerOptions
from tests.conftest import SUMMARY_LINES, Stack
from tests.helpers import stored_bytes
from tests.support.runner import FAULTY_GENBUF, GENBUF, clean_environ

ORG = 76


def _chunks(gen: int) -> list[bytes]:
    return [f"{gen}:{i};".encode() for i in range(1 + gen % 7)]


def _run_until(worker: Worker, done: Callable[[], bool], timeout: float = 30) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


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
    )
    for gen in everyone:
        assert stored_bytes(stack, gen) == b"".join(_chunks(gen)), gen
        assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
    assert worker.summary.sweeps >= 1 and worker.summary.compacted >= len(everyone)


def test_a_dead_workers_entries_are_taken_over(embedded: Stack) -> None:
    """An entry read by a worker that never acknowledged it is taken over after the
    visibility timeout, and compacted once."""
    gen = embedded.repository.create_generation(ORG)
    embedded.buffer.push_many(ORG, gen, _chunks(gen))
    embedded.buffer.finish(ORG, gen)
    events = embedded.buffer.events
    events.ensure_group()
    assert [e.generation_id for e in events.read("dead", 10, 1)] == [gen]  # never acked
    assert events.try_sweep("another worker", 3_600_000)  # the fleet's sweep is not ours
    options = WorkerOptions(
        visibility=timedelta(milliseconds=200), sweep_every=timedelta(hours=1), consumer="w2"
    )
    worker = Worker(embedded.buffer, embedded.repository, embedded.config(), options)
    _run_until(worker, lambda: stored_bytes(embedded, gen) is not None)
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
    _run_until(worker, lambda: len(records) == 3)
    assert sorted(r["outcome"] for r in records) == ["compacted", "needless", "needless"]
    assert stored_bytes(embedded, gen) == b"".join(_chunks(gen))


def _buffer_keys(stack: Stack) -> list[str]:
    """Every buffer key left under the stack's prefix (genbuf's own hashes included),
    on every primary of a cluster."""
    prefix = stack.buffer.prefix.replace(":", "\\:")
    found = []
    for pattern in (prefix + "*:chunks*", "{" + prefix + "*"):
        found += [k.decode() for k in stack.buffer.client.scan_iter(match=pattern, count=1000)]
    return found


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
    try:
        deadline = time.monotonic() + 30
        while not logs[0].read_text() and time.monotonic() < deadline:
            gens.append(produce(len(gens)))
            time.sleep(0.02)
        fleet += [start(logs[1]), start(logs[2])]
        while len(gens) < 250:
            gens.append(produce(len(gens)))
            if len(gens) >= 100 and fleet[0].poll() is None:
                fleet[0].kill()  # kill -9, in the middle of its work
        # until every buffer is gone: the killed worker's last delivery is taken over
        # only after --visibility, and the sweeper's deliveries come a period apart
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(stored_bytes(backend, g) is not None for g in gens) and not _buffer_keys(
                backend
            ):
                break
            time.sleep(0.2)
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
    env = clean_environ({**servers.env, "GENBUFFER_PAUSE_AT": "before_commit=3"})
    worker = subprocess.Popen(
        [*FAULTY_GENBUF, "worker", "--json"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    time.sleep(1.5)  # started, and paused before the commit
    worker.send_signal(signal.SIGTERM)
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


def test_status_shows_the_worker_queue(embedded: Stack) -> None:
    """status names the queue: entries announced and not done, those a worker holds, the
    workers that read, the oldest entry's age; all done, the queue is empty."""
    assert json.loads(embedded.cli("status", "--json").stdout)["worker_queue"] is None
    gens = [embedded.repository.create_generation(ORG) for _ in range(3)]
    for gen in gens:
        embedded.buffer.push_many(ORG, gen, _chunks(gen))
        embedded.buffer.finish(ORG, gen)
    events = embedded.buffer.events
    events.ensure_group()
    (held,) = events.read("w0", 1, 1)  # one delivery a worker holds, not acknowledged
    queue = json.loads(embedded.cli("status", "--json").stdout)["worker_queue"]
    assert (queue["entries"], queue["pending"], queue["consumers"]) == (3, 1, 1)
    assert 0 <= queue["oldest_entry_age_seconds"] < 60
    assert "worker queue: 3 entries, 1 held by a worker" in embedded.cli("status").stdout
    options = WorkerOptions(visibility=timedelta(milliseconds=1), consumer="w1")
    records: list[dict[str, object]] = []
    worker = Worker(
        embedded.buffer, embedded.repository, embedded.config(), options, log=records.append
    )
    # (the sweeper announces the finished buffers again at start: duplicates, needless)
    _run_until(
        worker,
        lambda: (
            all(stored_bytes(embedded, g) is not None for g in gens)
            and events.backlog() == Backlog(0, 0, 2, None)
        ),
    )
    queue = json.loads(embedded.cli("status", "--json").stdout)["worker_queue"]
    assert (queue["entries"], queue["pending"]) == (0, 0) and held.generation_id in gens
