"""A worker fleet through what its servers do: `python -m tests.worker_faults` (and, as
a test, tests/test_cluster.py).

Six Redis Cluster nodes (3 primaries, each with a replica) and two `genbuf worker`
processes blocked on the compaction-events stream. In turn: a forced failover of the
stream's primary (CLUSTER FAILOVER on its replica: `UNBLOCKED force unblock …`), the
stream deleted (`UNBLOCKED the stream key no longer exists`), a malformed event
(`XADD … org abc gen 1`), and a reshard of the stream's slot to another primary.
Before each fault both workers are blocked on the stream; after it a batch of
generations is produced (genbuf's finish(), and an app that only sets `finished_at`)
and every one must be compacted byte-exact. No worker may exit; SIGTERM stops both
with exit 0.

    python -m tests.worker_faults
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psycopg
import redis

from genbuffer import keys
from genbuffer.db.repository import Repository
from genbuffer.db.upgrade import upgrade
from genbuffer.redis import GenerationBuffer
from genbuffer.settings import Settings
from tests.support.cluster import LocalCluster
from tests.support.runner import GENBUF, clean_environ
from tests.support.urls import POSTGRES_ADMIN_URL, pg_url
from tests.support.wait import wait_until

ORG = 21
WORKERS = 2
PHASES = ("failover", "stream deleted", "malformed event", "reshard")


@dataclass
class FleetFaultsReport:
    """What one run saw."""

    generations: int = 0
    exact: int = 0
    phases: list[str] = field(default_factory=list)  # one line per fault
    outcomes: dict[str, int] = field(default_factory=dict)  # the workers' log lines
    tracebacks: int = 0
    alive_until_stopped: bool = False
    exit_codes: list[int] = field(default_factory=list)
    parked: list[dict[str, str]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)  # the workers' lines about the server

    def lines(self) -> list[str]:
        """The figures, one per line."""
        said = ", ".join(f"{name} {n}" for name, n in sorted(self.outcomes.items()))
        return [
            *self.phases,
            f"generations {self.generations}, byte-exact {self.exact}",
            f"workers' log lines: {said}; tracebacks {self.tracebacks}",
            *self.said,
            f"parked: {self.parked}",
            f"every worker alive until SIGTERM: {self.alive_until_stopped}, "
            f"exit codes {self.exit_codes}",
        ]


def _chunks(gen: int) -> list[bytes]:
    return [f'{{"g": {gen}, "part": {i}, "text": "ñ🚀"}}\n'.encode() for i in range(3 + gen % 4)]


class _FleetFaults:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes = LocalCluster(workdir / "cluster", primaries=3, replicas=1)
        self.database = f"genbuf_wfaults_{uuid.uuid4().hex[:10]}"
        self.report = FleetFaultsReport()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.gens: list[int] = []

    def setup(self) -> None:
        self.nodes.start()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        self.env = {
            "REDIS_CLUSTER_NODES": self.nodes.nodes,
            "REDIS_PREFIX": "faults_database_",
            "DATABASE_URL": pg_url(self.database),
            "METADATA_VALIDATION_LOG": str(self.workdir / "audit.log"),
        }
        settings = Settings(**{k.lower(): v for k, v in self.env.items()})
        self.repository = Repository.from_settings(settings)
        upgrade(self.repository.engine, self.repository.url)
        self.buffer = GenerationBuffer.from_settings(settings)
        client = self.buffer.client
        assert isinstance(client, redis.RedisCluster)
        self.stream = self.buffer.events.stream
        self.slot = int(client.keyslot(self.stream))

    def teardown(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        self.buffer.close()
        self.nodes.stop()
        self.repository.engine.dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def _log(self, index: int) -> Path:
        return self.workdir / f"worker-{index}.jsonl"

    def _blocked(self) -> int:
        """Workers blocked in XREADGROUP on the stream's primary."""
        try:
            owner = redis.Redis(port=self.nodes.owner(self.slot), socket_timeout=1)
            clients = owner.client_list()
        except redis.exceptions.RedisError:
            return 0
        return sum(1 for c in clients if c.get("cmd") == "xreadgroup" and "b" in c["flags"])

    def _until(self, done: Callable[[], bool], what: str, seconds: float = 90) -> None:
        def while_all_live() -> bool:
            dead = [w.pid for w in self.workers if w.poll() is not None]
            assert not dead, f"workers {dead} exited while waiting for {what}"
            return done()

        wait_until(while_all_live, seconds, what)

    def _produce(self, count: int) -> list[int]:
        """``count`` generations: genbuf's producer with finish(), and every third an
        app that only sets `finished_at` (the sweeper finds it)."""
        made = []
        for n in range(count):
            gen = self.repository.create_generation(ORG)
            self.buffer.push_many(ORG, gen, _chunks(gen))
            if n % 3 == 2:
                key = self.buffer.key_for(ORG, gen, None)
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                self.buffer.client.hset(keys.meta_key(key), "finished_at", stamp)
            else:
                self.buffer.finish(ORG, gen)
            made.append(gen)
        self.gens += made
        return made

    def _compacted(self, gens: list[int]) -> bool:
        return all(self._stored(gen) is not None for gen in gens)

    def _stored(self, gen: int) -> bytes | None:
        row = self.repository.get_generation(gen)
        if row is None or row.compacted is None:
            return None
        return base64.b64decode(row.compacted)

    def _fault(self, phase: str) -> None:
        client = self.buffer.client
        if phase == "failover":
            old = self.nodes.owner(self.slot)
            new = self.nodes.fail_over_gracefully(old)
            said = f"CLUSTER FAILOVER: {new} took over from {old}"
        elif phase == "stream deleted":
            client.delete(self.stream)
            said = f"DEL {self.stream}"
        elif phase == "malformed event":
            entry = client.xadd(self.stream, {"org": "abc", "gen": "1"})
            said = f"XADD {self.stream} {entry!r} org abc gen 1"
        else:
            source = self.nodes.owner(self.slot)
            primaries = [p for p, role in self.nodes.roles().items() if role == "master"]
            target = next(p for p in primaries if p != source)
            self.nodes.move_slot(self.slot, target)
            said = f"reshard: slot {self.slot} moved from {source} to {target}"
        self.report.phases.append(f"{phase}: {said}")

    def run(self) -> FleetFaultsReport:
        args = ["worker", "--json", "--concurrency", "2", "--visibility", "3s"]
        for index in range(WORKERS):
            self.workers.append(
                subprocess.Popen(  # output to a file: a pipe nobody reads would block it
                    [GENBUF, *args, "--sweep-every", "1s"],
                    stdout=self._log(index).open("wb"),
                    stderr=subprocess.STDOUT,
                    env=clean_environ(self.env),
                )
            )
        for phase in PHASES:
            self._until(lambda: self._blocked() == WORKERS, f"both workers blocked ({phase})")
            started = time.monotonic()
            self._fault(phase)
            batch = self._produce(6)
            self._until(partial(self._compacted, batch), f"the batch after: {phase}")
            took = time.monotonic() - started
            self.report.phases[-1] += f" -> 6 generations compacted in {took:.1f}s"
        self.report.alive_until_stopped = all(w.poll() is None for w in self.workers)
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
        self.report.exit_codes = [w.wait(timeout=120) for w in self.workers]
        self._verify()
        return self.report

    def _verify(self) -> None:
        self.report.generations = len(self.gens)
        self.report.exact = sum(1 for g in self.gens if self._stored(g) == b"".join(_chunks(g)))
        outcomes: dict[str, int] = {}
        for index in range(WORKERS):
            text = self._log(index).read_text()
            self.report.tracebacks += text.count("Traceback")
            for line in text.splitlines():
                record = json.loads(line)
                outcome = record.get("outcome")
                if outcome is not None:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome in {"interrupted", "parked", "outage", "error"}:
                    self.report.said.append(f"worker {index}: {outcome}: {record['message']}")
        self.report.outcomes = outcomes
        parked = keys.parked_events_key(self.buffer.prefix)
        self.report.parked = [
            {k.decode(): v.decode() for k, v in fields.items() if k in (b"reason", b"fields")}
            for _, fields in self.buffer.client.xrange(parked)
        ]


def run_fleet_faults() -> FleetFaultsReport:
    """One run in a temporary directory; its figures."""
    with tempfile.TemporaryDirectory(prefix="genbuf-wfaults-") as workdir:
        faults = _FleetFaults(Path(workdir))
        faults.setup()
        try:
            return faults.run()
        finally:
            faults.teardown()


def main() -> int:
    """CLI entry: run, print the figures; exit 1 unless all is well."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    report = run_fleet_faults()
    for line in report.lines():
        print(line)
    healthy = (
        report.exact == report.generations > 0
        and report.tracebacks == 0
        and report.alive_until_stopped
        and report.exit_codes == [0] * WORKERS
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
