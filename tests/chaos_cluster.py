"""Chaos on a Redis Cluster: `make chaos-cluster` (full) and tests/test_chaos.py (short).

Six nodes (3 primaries, each with a replica). Producers push numbered chunks into
the app's untagged keys (genbuf's producer, which finishes and announces; and a
plain RPUSH + HINCRBY producer that never does); three `genbuf worker` processes
compact them. Meanwhile workers are killed with kill -9 and started again, and
primaries are killed with kill -9, so that their replicas take over (a forced
failover: what asynchronous replication had not copied yet is gone). Each killed
primary comes back as a replica.

At the end every generation's `compacted` is read back and its chunk tokens
counted: lost (pushed, acknowledged by Redis, not in the artifact), duplicated,
out of order, and of the lost, how many the compaction reported
(`chunk_count_mismatch`) and how many went silent.

    python -m tests.chaos_cluster --generations 120 --chunks 30 --kills 6 --failovers 3 \
        --duration 40
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from genbuffer import keys
from genbuffer.db.repository import Repository
from genbuffer.db.upgrade import upgrade
from genbuffer.errors import GenbufferError
from genbuffer.redis import GenerationBuffer
from genbuffer.settings import Settings
from tests.support.cluster import LocalCluster
from tests.support.runner import GENBUF, clean_environ
from tests.support.urls import POSTGRES_ADMIN_URL, pg_url

ORG = 5
TOKEN = re.compile(rb"<g(\d+):(\d+)>")
LOSS = "chunk_count_mismatch"


@dataclass
class ClusterChaosReport:
    """The figures of one run."""

    generations: int = 0
    chunks: int = 0
    in_doubt: int = 0  # pushes whose reply never came (not counted as lost if absent)
    worker_kills: int = 0
    failovers: int = 0
    lost: int = 0
    lost_reported: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    exact: int = 0
    buffers_left: int = 0
    worker_exit_codes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)  # what each lossy generation lost

    @property
    def lost_silent(self) -> int:
        """Lost chunks in generations whose compaction reported no loss."""
        return self.lost - self.lost_reported

    def lines(self) -> list[str]:
        """The figures, one per line."""
        return [
            f"generations {self.generations}, chunks acknowledged {self.chunks}, "
            f"in doubt {self.in_doubt}",
            f"worker kills (kill -9) {self.worker_kills}, primary failovers {self.failovers}",
            f"lost {self.lost} (reported {self.lost_reported}, silent {self.lost_silent}), "
            f"duplicated {self.duplicated}, out of order {self.out_of_order}",
            f"byte-exact {self.exact}/{self.generations}, buffers left {self.buffers_left}, "
            f"workers' exit codes on SIGTERM {self.worker_exit_codes}",
            f"took {self.seconds:.1f}s",
        ]


class _ClusterChaos:
    def __init__(
        self,
        generations: int,
        *,
        chunks: int,
        kills: int,
        failovers: int,
        duration: float,
        workdir: Path,
    ) -> None:
        self.duration = duration
        self.count = generations
        self.per_generation = chunks
        self.kills = kills
        self.failover_target = failovers
        self.workdir = workdir
        self.report = ClusterChaosReport(generations=generations)
        self.cluster = LocalCluster(workdir / "cluster", primaries=3, replicas=1)
        self.database = f"genbuf_cchaos_{uuid.uuid4().hex[:10]}"
        self.rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")) or None)
        self.acknowledged: dict[int, list[int]] = {}
        self.doubtful: dict[int, set[int]] = {}
        self.plain: set[int] = set()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.produced = threading.Event()
        self.lock = threading.Lock()

    def setup(self) -> None:
        self.cluster.start()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        self.env = {
            "REDIS_CLUSTER_NODES": self.cluster.nodes,
            "REDIS_PREFIX": "chaos_database_",
            "DATABASE_URL": pg_url(self.database),
            "METADATA_VALIDATION_LOG": str(self.workdir / "audit.log"),
        }
        settings = Settings(**{k.lower(): v for k, v in self.env.items()})
        self.repository = Repository.from_settings(settings)
        upgrade(self.repository.engine, self.repository.url)
        self.gens = [self.repository.create_generation(ORG) for _ in range(self.count)]
        self.buffer = GenerationBuffer.from_settings(settings)

    def teardown(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        self.buffer.close()
        self.cluster.stop()
        self.repository.engine.dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    # -- actors ----------------------------------------------------------------------

    def _start_worker(self, index: int) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"worker-{index}.log").open("ab")
        # --idle above the longest pause a failover gives a producer (a buffer compacted
        # and deleted while its producer waits would start a new stream: a regeneration)
        args = ["worker", "--json", "--concurrency", "2", "--idle", "10s", "--visibility", "3s"]
        return subprocess.Popen(
            [GENBUF, *args, "--sweep-every", "1s"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environ(self.env),
        )

    def produce(self) -> None:
        """Generations in turn, a chunk at a time; a push whose reply is lost is not sent
        again (it may have arrived: it counts as in doubt, neither lost nor duplicated)."""
        for number, gen in enumerate(self.gens):
            plain = number % 5 == 4  # the app's plain producer: never finishes, never tells
            if plain:
                self.plain.add(gen)
            for seq in range(self.per_generation):
                chunk = f"<g{gen}:{seq:05d}>".encode()
                try:
                    if plain:  # as tests/php/cluster_producer.php does
                        key = self.buffer.key_for(ORG, gen, None)
                        if self.buffer.client.rpush(key, chunk) == 1:
                            self.buffer.client.expire(key, 3600)
                        self.buffer.client.hincrby(keys.meta_key(key), "chunk_count", 1)
                    else:
                        self.buffer.push_chunk(ORG, gen, chunk)
                    self.acknowledged.setdefault(gen, []).append(seq)
                except (
                    GenbufferError,
                    redis.exceptions.RedisError,
                    redis.exceptions.RedisClusterException,
                ):
                    self.doubtful.setdefault(gen, set()).add(seq)
                    time.sleep(0.2)
                time.sleep(self.duration / (self.count * self.per_generation))
            if not plain:
                self._finish(gen)
        self.produced.set()

    def _finish(self, gen: int) -> None:
        for _ in range(50):  # through a failover: finishing twice is harmless
            try:
                self.buffer.finish(ORG, gen)
                return
            except (
                GenbufferError,
                redis.exceptions.RedisError,
                redis.exceptions.RedisClusterException,
            ):
                time.sleep(0.2)

    def faults(self) -> None:
        """Worker kills and primary failovers, spread over the production."""
        events = ["kill"] * self.kills + ["failover"] * self.failover_target
        self.rng.shuffle(events)
        gap = self.duration / (len(events) + 1)
        for event in events:  # all of them, the last ones while the workers drain
            time.sleep(self.rng.uniform(0.5, 1.5) * gap)
            if event == "kill":
                index = self.rng.randrange(len(self.workers))
                self.workers[index].kill()
                self.workers[index].wait(timeout=10)
                self.report.worker_kills += 1
                self.workers[index] = self._start_worker(index)
            else:
                self._fail_over()

    def _fail_over(self) -> None:
        primaries = [p for p, role in self.cluster.roles().items() if role == "master"]
        victim = self.rng.choice([p for p in primaries if self.cluster.replicas_of(p)])
        self.cluster.fail_over(victim)  # kill -9: its replica is promoted
        self.report.failovers += 1
        self.cluster.restart(victim)  # back as a replica of the promoted one
        self.cluster.wait_ok(seconds=60)

    # -- the run -----------------------------------------------------------------------

    def run(self) -> ClusterChaosReport:
        started = time.monotonic()
        self.workers = [self._start_worker(i) for i in range(3)]
        producer = threading.Thread(target=self.produce)
        producer.start()
        self.faults()
        producer.join()
        self.cluster.wait_ok(seconds=60)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self._left() > 0:
            time.sleep(0.5)
        # a worker restarted by the last kill may still be starting (no SIGTERM handler
        # yet: the signal's default action would end it): each beats once it runs
        beating_by = time.monotonic() + 60
        while time.monotonic() < beating_by and not self._all_beating():
            time.sleep(0.2)
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
        self.report.worker_exit_codes = [w.wait(timeout=120) for w in self.workers]
        self.report.buffers_left = self._left()
        for found in self.buffer.scan.discover():
            self.report.details.append(f"left: {found.key} list={found.has_list} {found.meta}")
        self._verify()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _all_beating(self) -> bool:
        """Whether every worker process has beaten (its loop runs, its handlers are set)."""
        try:
            beating = {beat.consumer for beat in self.buffer.fleet.members()}
        except GenbufferError:
            return False
        return all(f"{socket.gethostname()}-{w.pid}" in beating for w in self.workers)

    def _left(self) -> int:
        try:
            return sum(1 for _ in self.buffer.scan.discover())
        except GenbufferError:
            return -1

    def _verify(self) -> None:
        reported = self._loss_reported()
        for gen in self.gens:
            row = self.repository.get_generation(gen)
            stored = b""
            if row is not None and row.compacted:
                stored = base64.b64decode(row.compacted)
            seqs = [int(s) for g, s in TOKEN.findall(stored) if int(g) == gen]
            acked = self.acknowledged.get(gen, [])
            self.report.chunks += len(acked)
            self.report.in_doubt += len(self.doubtful.get(gen, ()))
            counts = Counter(seqs)
            self.report.duplicated += sum(n - 1 for n in counts.values() if n > 1)
            self.report.out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
            missing = [seq for seq in acked if seq not in counts]
            self.report.lost += len(missing)
            if missing and gen in reported:
                self.report.lost_reported += len(missing)
            if missing:
                kind = "plain" if gen in self.plain else "genbuf"
                said = "reported" if gen in reported else "SILENT"
                self.report.details.append(f"g{gen} ({kind}, {said}): lost {missing}")
            doubtful = self.doubtful.get(gen, set())
            if [seq for seq in seqs if seq not in doubtful] == acked:
                self.report.exact += 1

    def _loss_reported(self) -> set[int]:
        """Generations with a chunk_count_mismatch issue row."""
        found: set[int] = set()
        for gen in self.gens:
            for issue in self.repository.observations.issues_of(gen):
                errors = issue["errors"]
                items = json.loads(errors) if isinstance(errors, str) else errors
                if any(item.get("code") == LOSS for item in items):
                    found.add(gen)
        return found


def run_cluster_chaos(
    generations: int = 120,
    chunks: int = 30,
    kills: int = 6,
    failovers: int = 3,
    duration: float = 40.0,
) -> ClusterChaosReport:
    """Run one cluster chaos round in a temporary directory and return its figures."""
    keep = os.environ.get("CHAOS_WORKDIR")  # logs kept there, for a post-mortem
    with tempfile.TemporaryDirectory(prefix="genbuf-cchaos-", dir=keep) as workdir:
        chaos = _ClusterChaos(
            generations,
            chunks=chunks,
            kills=kills,
            failovers=failovers,
            duration=duration,
            workdir=Path(workdir),
        )
        chaos.setup()
        try:
            return chaos.run()
        finally:
            chaos.teardown()


def main() -> int:
    """CLI entry: run, print the figures; exit 1 on a duplicate, a silent loss, a buffer
    left or a worker that did not stop cleanly."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=120)
    parser.add_argument("--chunks", type=int, default=30, help="chunks per generation")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of production")
    args = parser.parse_args()
    report = run_cluster_chaos(
        args.generations, args.chunks, args.kills, args.failovers, args.duration
    )
    for line in report.lines() + report.details[:20]:
        print(line)
    healthy = (
        report.duplicated == report.out_of_order == report.lost_silent == 0
        and report.buffers_left == 0
        and report.worker_exit_codes == [0, 0, 0]
        and report.failovers >= 1
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
