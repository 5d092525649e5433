"""Chaos run against real servers: `make chaos` (full) and tests/test_chaos.py (short).

A producer pushes numbered chunks (with sequence numbers, retried through
outages) into many generations while two compactor loops run
`genbuf compact-generation --delete` as real processes. Many of those processes
are SIGKILLed at random points (the crash hook or an outside kill -9); Redis is
killed and restarted once; a PostgreSQL backend is terminated once. At the end
every buffer is drained and every generation's `compacted` must be exactly its
chunks, in order, once each.

    python -m tests.chaos --chunks 5000 --generations 20 --kills 50
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from genbuffer.compaction import CompactionConfig, CompactionRequest, assemble_and_persist
from genbuffer.db.repository import Repository
from genbuffer.db.upgrade import upgrade
from genbuffer.errors import NothingToCompact, RedisUnavailable
from genbuffer.faults import IN_ROW_STEPS
from genbuffer.redis import GenerationBuffer
from genbuffer.settings import Settings
from tests.support.runner import spawn_genbuf
from tests.support.servers import PrivateRedis
from tests.support.urls import POSTGRES_ADMIN_URL, pg_url

ORG = 1
TOKEN = re.compile(rb"<g(\d+):(\d+)>")


@dataclass
class ChaosReport:
    """The figures of one run."""

    chunks: int = 0
    generations: int = 0
    compactions: int = 0
    kills_hook: int = 0
    kills_external: int = 0
    outages: int = 0
    redis_restarts: int = 0
    pg_backends_terminated: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    exact: int = 0
    unexpected: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kills(self) -> int:
        """SIGKILLs of compactor processes, both kinds."""
        return self.kills_hook + self.kills_external

    def lines(self) -> list[str]:
        """The report as printed."""
        return [
            f"chaos: chunks {self.chunks}, generations {self.generations}, "
            f"compactions {self.compactions}, kills {self.kills} "
            f"(crash hook {self.kills_hook}, kill -9 {self.kills_external}), "
            f"redis restarts {self.redis_restarts}, "
            f"postgres backends terminated {self.pg_backends_terminated}, "
            f"outage exits {self.outages}, {self.seconds:.0f}s",
            f"chaos: lost {self.lost}, duplicated {self.duplicated}, "
            f"out of order {self.out_of_order}, generations exact {self.exact}/{self.generations}",
        ]


class _Chaos:
    def __init__(self, chunks: int, generations: int, kills: int, duration: float, workdir: Path):
        self.total = chunks
        self.generations = list(range(1, generations + 1))
        self.kill_target = kills
        self.duration = duration
        self.workdir = workdir
        self.report = ChaosReport(chunks=chunks, generations=generations)
        self.redis = PrivateRedis(workdir)
        self.database = f"genbuf_chaos_{uuid.uuid4().hex[:10]}"
        self.produced = 0
        self.producer_done = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")) or None)
        self.env: dict[str, str] = {}

    # -- set-up ----------------------------------------------------------------------

    def setup(self) -> None:
        self.redis.start()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        self.env = {
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": pg_url(self.database),
            "METADATA_VALIDATION_LOG": str(self.workdir / "audit.log"),
            "METADATA_VALIDATION_STRICT": "false",
        }
        self.settings = Settings(
            redis_url=self.redis.url,
            database_url=pg_url(self.database),
            metadata_validation_log=self.workdir / "audit.log",
        )
        self.repository = Repository.from_settings(self.settings)
        upgrade(self.repository.engine, self.repository.url)
        for gen in self.generations:
            self.repository.create_generation(ORG, generation_id=gen)
        self.buffer = GenerationBuffer.from_settings(self.settings)

    def teardown(self) -> None:
        self.redis.kill()
        self.repository.engine.dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    # -- actors ----------------------------------------------------------------------

    def produce(self) -> None:
        per_chunk = self.duration / max(self.total, 1)
        seqs = dict.fromkeys(self.generations, 0)
        for index in range(self.total):
            gen = self.generations[index % len(self.generations)]
            chunk = f"<g{gen}:{seqs[gen]:05d}>".encode()
            while True:  # through outages, re-sending the same sequence number
                try:
                    self.buffer.push_chunk(ORG, gen, chunk, seq=seqs[gen])
                    break
                except RedisUnavailable:
                    time.sleep(0.05)
            seqs[gen] += 1
            self.produced = index + 1
            time.sleep(per_chunk)
        self.producer_done.set()

    def compactor(self) -> None:
        while not self.stop.is_set():
            gen = self.rng.choice(self.generations)
            env = dict(self.env)
            outside_kill_after = None
            roll = self.rng.random()
            if roll < 0.35:
                env["GENBUFFER_CRASH_AT"] = self.rng.choice(IN_ROW_STEPS)
            elif roll < 0.6:
                outside_kill_after = self.rng.uniform(0.05, 1.2)
            proc = spawn_genbuf(
                ["compact-generation", str(ORG), str(gen), "--delete", "--soft", "--json"],
                env,
                faults=True,
            )
            if outside_kill_after is not None:
                timer = threading.Timer(outside_kill_after, proc.kill)
                timer.start()
            _, stderr = proc.communicate(timeout=120)
            if outside_kill_after is not None:
                timer.cancel()
            self._record(proc.returncode, stderr, env, outside_kill_after)

    def _record(self, code: int, stderr: str, env: dict[str, str], outside: float | None) -> None:
        with self.lock:
            self.report.compactions += 1
            if code == -9:
                if "GENBUFFER_CRASH_AT" in env:
                    self.report.kills_hook += 1
                else:
                    self.report.kills_external += 1
            elif code == 3:
                self.report.outages += 1
            elif code == 1 and "nothing to compact" in stderr:
                pass
            elif code not in (0, 1) or (code == 1 and "error:" in stderr):
                self.report.unexpected.append(f"exit {code}: {stderr.strip()[:300]}")
            del outside

    def faults(self) -> None:
        """Restart Redis at ~40% of production; terminate a backend at ~70%."""
        while self.produced < self.total * 0.4 and not self.stop.is_set():
            time.sleep(0.05)
        self.redis.restart()
        self.report.redis_restarts += 1
        while self.produced < self.total * 0.7 and not self.stop.is_set():
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            while time.monotonic() < deadline and not self.stop.is_set():
                row = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> "
                    "pg_backend_pid() AND state IN ('idle in transaction', 'active')",
                    (self.database,),
                ).fetchone()
                if row and admin.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone():
                    self.report.pg_backends_terminated += 1
                    return
                time.sleep(0.01)

    # -- the run ---------------------------------------------------------------------

    def run(self) -> ChaosReport:
        started = time.monotonic()
        threads = [
            threading.Thread(target=self.produce, name="producer"),
            threading.Thread(target=self.compactor, name="compactor-1"),
            threading.Thread(target=self.compactor, name="compactor-2"),
            threading.Thread(target=self.faults, name="faults"),
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + max(600.0, self.duration * 10)
        while time.monotonic() < deadline:
            done = self.producer_done.is_set() and self.report.kills >= self.kill_target
            if done and self.report.pg_backends_terminated and self.report.redis_restarts:
                break
            time.sleep(0.1)
        self.stop.set()
        for thread in threads:
            thread.join()
        self.drain()
        self.verify()
        self.report.seconds = time.monotonic() - started
        return self.report

    def drain(self) -> None:
        """Compact every generation until its buffer is gone (no faults now)."""
        config = CompactionConfig.from_settings(self.settings)
        for gen in self.generations:
            for _ in range(5):
                with contextlib.suppress(NothingToCompact):
                    assemble_and_persist(
                        CompactionRequest(ORG, gen, delete=True, strict=False, force=True),
                        buffer=self.buffer,
                        repository=self.repository,
                        config=config,
                    )
                if not self.buffer.keyspace.generation_keys(ORG, gen):
                    break

    def verify(self) -> None:
        per_gen = Counter(self.generations[i % len(self.generations)] for i in range(self.total))
        for gen in self.generations:
            expected = [f"<g{gen}:{k:05d}>".encode() for k in range(per_gen[gen])]
            row = self.repository.get_generation(gen)
            data = base64.b64decode(row.compacted) if row and row.compacted else b""
            found = [m.group(0) for m in TOKEN.finditer(data)]
            want, got = Counter(expected), Counter(found)
            self.report.lost += sum((want - got).values())
            self.report.duplicated += sum((got - want).values())
            if not (want - got) and not (got - want) and found != expected:
                self.report.out_of_order += 1
            if data == b"".join(expected) and self.repository.backups(gen) == expected:
                self.report.exact += 1


def run_chaos(
    chunks: int = 5000, generations: int = 20, kills: int = 50, duration: float = 60.0
) -> ChaosReport:
    """Run one chaos round in a temporary directory and return its figures."""
    with tempfile.TemporaryDirectory(prefix="genbuf-chaos-") as workdir:
        chaos = _Chaos(chunks, generations, kills, duration, Path(workdir))
        chaos.setup()
        try:
            return chaos.run()
        finally:
            chaos.teardown()


def main() -> int:
    """CLI entry: run, print the figures, exit 1 on any loss, duplicate or shortfall."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of production")
    args = parser.parse_args()
    report = run_chaos(args.chunks, args.generations, args.kills, args.duration)
    for line in report.lines():
        print(line)
    for problem in report.unexpected[:10]:
        print("unexpected:", problem)
    healthy = (
        report.lost == report.duplicated == report.out_of_order == 0
        and report.exact == report.generations
        and report.kills >= args.kills
        and report.redis_restarts >= 1
        and report.pg_backends_terminated >= 1
        and not report.unexpected
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
