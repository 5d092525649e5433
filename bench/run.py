"""`make bench`: genbuf beside hand-written raw redis-py / psycopg baselines doing the same I/O.

Each row is the median of REPEAT runs (setup untimed). Ratios are "genbuf / raw"
for rates (higher is better) and "genbuf / raw" for times (lower is better), as
each row says. Needs the real Redis and PostgreSQL (REDIS_TEST_URL,
POSTGRES_TEST_URL). Writes bench/results.md.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from genbuffer.compaction import CompactionConfig, CompactionRequest, assemble_and_persist
from genbuffer.db.repository import Repository
from genbuffer.db.upgrade import upgrade
from genbuffer.engine.burst import compact_pending
from genbuffer.operations.migrate_compacted import migrate_compacted_from_metadata
from genbuffer.operations.purge_chunks import purge_chunks
from genbuffer.redis import GenerationBuffer
from genbuffer.settings import Settings

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get("POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
QUICK = os.environ.get("BENCH_QUICK") == "1"  # smaller sizes, for trying the harness
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """What a row's ratio must be: at least or at most ``bound``; or no target (``label``)."""

    relation: str  # ">=", "<=" or "" (none)
    bound: float = 0.0
    label: str = ""

    @classmethod
    def at_least(cls, bound: float) -> Target:
        """The ratio (a rate, genbuf / raw) must be at least ``bound``."""
        return cls(">=", bound)

    @classmethod
    def at_most(cls, bound: float) -> Target:
        """The ratio (a time or size, genbuf / raw) must be at most ``bound``."""
        return cls("<=", bound)

    @classmethod
    def none(cls, label: str) -> Target:
        """No target: shown as ``label`` ("linear", "(info)")."""
        return cls("", label=label)

    def met(self, ratio: float | None) -> bool | None:
        """Whether ``ratio`` meets the target (None: no target, or no ratio)."""
        if not self.relation or ratio is None:
            return None
        return ratio >= self.bound if self.relation == ">=" else ratio <= self.bound

    def __str__(self) -> str:
        return self.label if not self.relation else f"{self.relation}{self.bound:g}x"


@dataclass(frozen=True)
class Row:
    """One benchmark line; whether it met its target is computed from the target itself."""

    operation: str
    genbuf: str
    baseline: str
    ratio: float | None
    target: Target
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the target."""
        return self.target.met(self.ratio)


def compare(
    ours: Callable[[], object],
    raw: Callable[[], object],
    setup_ours: Callable[[], object] | None = None,
    setup_raw: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Medians of genbuf and the baseline, run alternately so machine drift hits both."""
    ours_times: list[float] = []
    raw_times: list[float] = []
    for rep in range(REPEAT):
        order = [(ours, setup_ours, ours_times), (raw, setup_raw, raw_times)]
        for run, setup, times in order if rep % 2 == 0 else order[::-1]:
            if setup:
                setup()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return statistics.median(ours_times), statistics.median(raw_times)


def median_time(
    run: Callable[[], object], setup: Callable[[], object] | None = None, repeat: int = 0
) -> float:
    """Median wall time of ``run`` over REPEAT repetitions, ``setup`` untimed before each."""
    times = []
    for _ in range(repeat or REPEAT):
        if setup:
            setup()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Bench:
    """Owns a scratch PostgreSQL database and a Redis key prefix."""

    def __init__(self) -> None:
        self.database = f"genbuf_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        base = ADMIN_URL.rsplit("/", 1)[0]
        self.pg_dsn = f"{base}/{self.database}"
        self.prefix = f"genbuf-bench:{uuid.uuid4().hex[:8]}:"
        self.settings = Settings(
            redis_url=REDIS_URL,
            redis_prefix=self.prefix,
            database_url=self.pg_dsn,
            generation_chunks_backup=False,
            metadata_validation_log=Path(tempfile.mkdtemp()) / "audit.log",
        )
        self.repository = Repository.from_settings(self.settings)
        upgrade(self.repository.engine, self.repository.url)
        self.buffer = GenerationBuffer.from_settings(self.settings)
        self.config = CompactionConfig.from_settings(self.settings)
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.pg = psycopg.connect(self.pg_dsn)
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def close(self) -> None:
        """Drop the scratch database and keys."""
        self.pg.close()
        self.repository.engine.dispose()
        for key in self.redis.scan_iter(match=self.prefix.replace(":", "\\:") + "*", count=5000):
            self.redis.delete(key)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def flush(self) -> None:
        """Remove this run's keys."""
        keys = list(self.redis.scan_iter(match=self.prefix.replace(":", "\\:") + "*", count=5000))
        for start in range(0, len(keys), 5000):
            self.redis.delete(*keys[start : start + 5000])

    def sql(self, statement: str, params: tuple[object, ...] = ()) -> None:
        """Run one statement and commit."""
        self.pg.execute(statement, params)
        self.pg.commit()

    def add(self, row: Row) -> None:
        """Record and print a row."""
        self.rows.append(row)
        verdict = "" if row.met is None else ("ok" if row.met else "MISSED")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        print(
            f"{row.operation:<58} {row.genbuf:>14} {row.baseline:>14} {ratio:>7} "
            f"{row.target!s:>8} {verdict}",
            flush=True,
        )


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


# -- 1. push_chunk ------------------------------------------------------------------------


def bench_push_chunk(b: Bench) -> None:
    n = 2000 if QUICK else 10000
    chunk = b"x" * 100
    gen = iter(range(1, 10**9))
    raw_key = f"{b.prefix}raw:push"

    def genbuf_push() -> None:
        g = next(gen)
        for _ in range(n):
            b.buffer.push_chunk(1, g, chunk)

    def raw_rpush() -> None:
        for _ in range(n):
            b.redis.rpush(raw_key, chunk)

    def laravel_flow() -> None:
        key = f"{b.prefix}raw:laravel:{next(gen)}"
        for _ in range(n):
            length = b.redis.rpush(key, chunk)
            if length == 1:
                b.redis.expire(key, 86400)
            b.redis.hincrby(key + ":meta", "chunk_count", 1)
            b.redis.hset(key + ":meta", "last_chunk_at", datetime.now(UTC).isoformat())
            if length == 1:
                b.redis.expire(key + ":meta", 86400)

    conn = b.redis.connection_pool.make_connection()

    def lean_rpush() -> None:
        # RPUSH pre-packed on one held connection, skipping redis-py's per-command path:
        # the floor genbuf's hot path works against (for reference, no target).
        packed = conn.pack_command("RPUSH", raw_key, chunk)
        for _ in range(n):
            conn.send_packed_command(packed, check_health=False)
            conn.read_response()

    ours, raw = compare(genbuf_push, raw_rpush, b.flush, b.flush)
    ours_again, laravel = compare(genbuf_push, laravel_flow, b.flush, b.flush)
    ours_third, lean = compare(genbuf_push, lean_rpush, b.flush, b.flush)
    conn.disconnect()
    ours = statistics.median([ours, ours_again, ours_third])
    b.add(
        Row(
            "1. push_chunk, full meta update, one chunk at a time",
            rate(n, ours),
            rate(n, raw),
            raw / ours,
            Target.at_least(0.85),
            "baseline: a raw RPUSH loop",
        )
    )
    b.add(
        Row(
            "1. push_chunk vs the Laravel flow (RPUSH, HINCRBY, HSET, EXPIRE)",
            rate(n, ours),
            rate(n, laravel),
            laravel / ours,
            Target.at_least(2.5),
            "baseline: separate calls as the PHP code makes them",
        )
    )
    b.add(
        Row(
            "1. push_chunk vs RPUSH pre-packed on a held connection",
            rate(n, ours),
            rate(n, lean),
            lean / ours,
            Target.none("(info)"),
            "for reference: the cost of the Lua meta update itself",
        )
    )


# -- 2. push_many ----------------------------------------------------------


def bench_push_many(b: Bench) -> None:
    n = 20000 if QUICK else 200000
    chunks = [f"{i:09d}".encode() + b"y" * 91 for i in range(n)]
    gen = iter(range(10**6, 10**9))

    def genbuf_many() -> None:
        b.buffer.push_many(2, next(gen), chunks)

    def raw_pipelined() -> None:
        key = f"{b.prefix}raw:many:{next(gen)}"
        pipe = b.redis.pipeline(transaction=False)
        for start in range(0, n, 1000):
            pipe.rpush(key, *chunks[start : start + 1000])
        pipe.execute()

    ours, raw = compare(genbuf_many, raw_pipelined, b.flush, b.flush)

    b.add(
        Row(
            f"2. push_many, {n:,} chunks of 100 B",
            rate(n, ours),
            rate(n, raw),
            raw / ours,
            Target.at_least(0.8),
            "baseline: pipelined variadic RPUSH of 1,000",
        )
    )


# -- 3. compact one generation ------------------------------------------------------------


def _raw_compact(b: Bench, key: str, gen: int) -> None:
    """The hand-written baseline: lock, LRANGE, UPDATE, COMMIT, LTRIM."""
    with b.pg.transaction():
        b.pg.execute("SELECT id FROM scenario_generations WHERE id = %s FOR UPDATE", (gen,))
        chunks = b.redis.lrange(key, 0, -1)
        data = b"".join(chunks)
        b.pg.execute(
            "UPDATE scenario_generations SET compacted = %s, chunk_count = %s, "
            "compacted_at = now(), metadata = %s::jsonb WHERE id = %s",
            (
                base64.b64encode(data).decode(),
                len(chunks),
                json.dumps({"chunk_count": len(chunks), "bytes": len(data)}),
                gen,
            ),
        )
    b.redis.ltrim(key, len(chunks), -1)


def _compact_pair(
    b: Bench, chunks: list[bytes], label: str, target: Target | None
) -> tuple[float, float]:
    state: dict[str, int] = {}

    def setup_ours() -> None:
        b.flush()
        state["gen"] = b.repository.create_generation(4)
        b.buffer.push_many(4, state["gen"], chunks)

    def ours() -> None:
        assemble_and_persist(
            CompactionRequest(4, state["gen"], delete=True),
            buffer=b.buffer,
            repository=b.repository,
            config=b.config,
        )

    def setup_raw() -> None:
        b.flush()
        state["gen"] = b.repository.create_generation(4)
        state_key = f"{b.prefix}raw:compact:{state['gen']}"
        pipe = b.redis.pipeline(transaction=False)
        for start in range(0, len(chunks), 1000):
            pipe.rpush(state_key, *chunks[start : start + 1000])
        pipe.execute()

    def raw() -> None:
        _raw_compact(b, f"{b.prefix}raw:compact:{state['gen']}", state["gen"])

    genbuf_time, raw_time = compare(ours, raw, setup_ours, setup_raw)

    if target:
        b.add(
            Row(
                label,
                ms(genbuf_time),
                ms(raw_time),
                genbuf_time / raw_time,
                target,
                "time ratio; baseline: lock, LRANGE, UPDATE, LTRIM",
            )
        )
    return genbuf_time, raw_time


def bench_compact(b: Bench) -> None:
    chunks = [bytes([65 + i % 26]) * 100 for i in range(10000)]
    _compact_pair(b, chunks, "3. compact-generation, 10,000 chunks of 100 B", Target.at_most(1.5))


def bench_scaling(b: Bench) -> None:
    sizes = [1000, 10000] if QUICK else [1000, 10000, 100000]
    for count in sizes:
        chunks = [b"s" * 100] * count
        ours, raw = _compact_pair(b, chunks, "", None)
        b.add(
            Row(
                f"   scaling: {count:,} chunks of 100 B",
                ms(ours),
                ms(raw),
                ours / raw,
                Target.none("linear"),
                f"{ours / count * 1e6:.1f} us per chunk",
            )
        )
    megabytes = [1, 16] if QUICK else [1, 16, 64]
    for mb in megabytes:
        chunks = [b"m" * 1024] * (mb * 1024)
        ours, raw = _compact_pair(b, chunks, "", None)
        b.add(
            Row(
                f"   scaling: {mb} MB in 1 KB chunks",
                ms(ours),
                ms(raw),
                ours / raw,
                Target.none("linear"),
                f"{ours / mb * 1000:.1f} ms per MB",
            )
        )


# -- 4. batch compaction ------------------------------------------------------------------


def bench_batch(b: Bench) -> None:
    gens, per = (200, 200) if QUICK else (1000, 200)

    # valid JSON, as a finished LLM response is: the raw loop validates nothing either
    body = [b"["] + [b'"' + b"b" * 97 + b'",'] * (per - 2) + [b'"end"]']
    state: dict[str, list[int]] = {}

    def setup(raw: bool) -> Callable[[], None]:
        def inner() -> None:
            b.flush()
            ids = [b.repository.create_generation(5) for _ in range(gens)]
            state["ids"] = ids
            pipe = b.redis.pipeline(transaction=False)
            for gen in ids:
                if raw:
                    pipe.rpush(f"{b.prefix}raw:batch:{gen}", *body)
                else:
                    key = b.buffer.key_for(5, gen, None)
                    pipe.rpush(key, *body)
                    pipe.hset(key + ":meta", mapping={"chunk_count": per, "finished_at": "x"})
            pipe.execute()

        return inner

    def ours() -> None:
        result = compact_pending(b.buffer, b.repository, b.config)
        assert result.compacted == gens, result

    def raw() -> None:
        for gen in state["ids"]:
            key = f"{b.prefix}raw:batch:{gen}"
            chunks = b.redis.lrange(key, 0, -1)
            data = b"".join(chunks)
            # the same columns genbuf writes: artifact, parsed JSON, metadata, counters
            metadata = {"chunk_count": len(chunks), "bytes": len(data)}
            with b.pg.transaction():
                b.pg.execute(
                    "UPDATE scenario_generations SET compacted = %s, llm_response = %s::jsonb, "
                    "metadata = %s::jsonb, chunk_count = %s, compacted_at = now(), "
                    "compacted_by = 'raw' WHERE id = %s",
                    (
                        base64.b64encode(data).decode(),
                        json.dumps(json.loads(data)),
                        json.dumps(metadata),
                        len(chunks),
                        gen,
                    ),
                )
            b.redis.delete(key)

    ours_time, raw_time = compare(ours, raw, setup(False), setup(True))

    b.add(
        Row(
            f"4. compact-pending, {gens:,} finished generations x {per} chunks",
            rate(gens, ours_time),
            rate(gens, raw_time),
            raw_time / ours_time,
            Target.at_least(0.8),
            "baseline: one loop of read + UPDATE + DEL, a transaction each; "
            "genbuf: its default 4 workers",
        )
    )


# -- 5. peak memory -----------------------------------------------------------------------

MEMORY_CHILD = r"""
import json, resource, sys
from genbuffer.redis import GenerationBuffer
from genbuffer.compaction import CompactionConfig, CompactionRequest, assemble_and_persist
from genbuffer.db.repository import Repository
from genbuffer.settings import Settings
settings = Settings(redis_url=sys.argv[1], redis_prefix=sys.argv[2], database_url=sys.argv[3],
                    metadata_validation_log=sys.argv[5])
buffer = GenerationBuffer.from_settings(settings)
repository = Repository.from_settings(settings)
buffer.keyspace.ping(); repository.ping()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = assemble_and_persist(CompactionRequest(6, int(sys.argv[4]), delete=True),
                              buffer=buffer, repository=repository,
                              config=CompactionConfig.from_settings(settings))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": after, "bytes": result.bytes}))
"""


def bench_memory(b: Bench) -> None:
    mb = 16 if QUICK else 64
    chunk = ('"' + "w" * 1021 + '",').encode()  # a JSON array of 1 KB strings
    results = []
    for _ in range(3):
        b.flush()
        gen = b.repository.create_generation(6)
        count = mb * 1024
        chunks = [b"["] + [chunk] * (count - 1) + [b'"end"]']
        b.buffer.push_many(6, gen, chunks)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                MEMORY_CHILD,
                REDIS_URL,
                b.prefix,
                b.pg_dsn,
                str(gen),
                str(b.settings.metadata_validation_log),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout))
    growth = statistics.median((r["peak_kb"] - r["before_kb"]) / 1024 for r in results)
    peak = statistics.median(r["peak_kb"] / 1024 for r in results)
    ratio = growth / mb
    b.add(
        Row(
            f"5. peak memory compacting a {mb} MB generation (1 KB chunks, backups on)",
            f"+{growth:,.0f} MB",
            f"{mb} MB",
            ratio,
            Target.at_most(5),
            f"peak RSS {peak:,.0f} MB incl. interpreter and libraries",
        )
    )


# -- 6. migrate and purge -----------------------------------------------------------------


def bench_migrate(b: Bench) -> None:
    n = 20000 if QUICK else 100000
    blob = base64.b64encode(b"q" * 300).decode()

    def setup() -> None:
        b.sql("TRUNCATE scenario_generations RESTART IDENTITY CASCADE")
        b.sql(
            "INSERT INTO scenario_generations (organization_id, metadata) "
            "SELECT 7, jsonb_build_object('compacted', %s::text, 'chunk_count', 3, 'k', g) "
            "FROM generate_series(1, %s) g",
            (blob, n),
        )

    def ours() -> None:
        result = migrate_compacted_from_metadata(b.repository, batch_size=5000)
        assert result.migrated == n, result

    def raw() -> None:
        b.sql(
            "UPDATE scenario_generations SET compacted = metadata->>'compacted', "
            "chunk_count = COALESCE(chunk_count, (metadata->>'chunk_count')::int), "
            "metadata = metadata - 'compacted' WHERE metadata ? 'compacted'"
        )

    ours_time, raw_time = compare(ours, raw, setup, setup)

    b.add(
        Row(
            f"6. migrate-compacted-from-metadata, {n:,} rows",
            rate(n, ours_time),
            rate(n, raw_time),
            raw_time / ours_time,
            Target.at_least(0.5),  # issue 5 (issue 23 raised row 4's only)
            "baseline: one UPDATE statement; genbuf commits every 5,000 rows",
        )
    )


def bench_purge(b: Bench) -> None:
    n = 100000 if QUICK else 1000000
    gens = 1000

    def setup() -> None:
        b.sql("TRUNCATE generation_chunks, scenario_generations RESTART IDENTITY CASCADE")
        b.sql(
            # ids 1..gens from the sequence just restarted, so later rows do not collide
            "INSERT INTO scenario_generations (organization_id, compacted_at) "
            "SELECT 8, now() FROM generate_series(1, %s) g",
            (gens,),
        )
        b.sql(
            "INSERT INTO generation_chunks "
            "(organization_id, generation_id, seq, content, created_at) "
            "SELECT 8, 1 + (g %% %s), g / %s, '\\x00010203'::bytea, now() - interval '30 days' "
            "FROM generate_series(0, %s - 1) g",
            (gens, gens, n),
        )
        # as a table in service is: with statistics (genbuf would ANALYZE a table that
        # has none, and that would change the baseline's plans on the next run)
        b.sql("ANALYZE generation_chunks, scenario_generations")

    def ours() -> None:
        result = purge_chunks(b.repository, "7d", batch_size=5000)
        assert result.purged == n, result

    def raw() -> None:
        # id ranges of 5,000: with statistics, the DELETE … IN (SELECT … LIMIT 5000) form
        # walks the created_at index over every row earlier batches deleted (~50k rows/s)
        low, high = b.pg.execute(
            "SELECT min(id) - 1, max(id) FROM generation_chunks "
            "WHERE created_at < now() - interval '7 days'"
        ).fetchone()  # type: ignore[misc]
        b.pg.commit()
        while low is not None and low < high:
            b.pg.execute(
                "DELETE FROM generation_chunks WHERE id > %s AND id <= %s "
                "AND created_at < now() - interval '7 days'",
                (low, min(low + 5000, high)),
            )
            b.pg.commit()
            low += 5000

    ours_time, raw_time = compare(ours, raw, setup, setup)

    b.add(
        Row(
            f"6. purge-chunks, {n:,} backup rows",
            rate(n, ours_time),
            rate(n, raw_time),
            raw_time / ours_time,
            Target.at_least(0.5),  # issue 5 (issue 23 raised row 4's only)
            "baseline: DELETE in id ranges of 5,000; genbuf also checks the generation "
            "is compacted",
        )
    )


# -- 7. whole processes: a command's fixed cost, and the work beyond it -------------------

FLOOR = "import typer, pydantic_settings, sqlalchemy, redis, psycopg"
RAW = ROOT / "bench" / "raw"


Prepared = tuple[list[str], Path | None]  # argv, and the file to feed on stdin (or none)


def _processes(
    runs: dict[str, Callable[[], Prepared]], env: dict[str, str], repeat: int
) -> dict[str, list[float]]:
    """Wall times of each named command over ``repeat`` rounds; each round runs every
    command once, in turn, so that drift hits them all alike.

    Each run is prepared (untimed: data pushed, rows created) just before it starts.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, prepare in runs.items():
            argv, stdin_path = prepare()
            with (stdin_path or Path(os.devnull)).open("rb") as stdin:
                start = time.perf_counter()
                subprocess.run(
                    argv,
                    stdin=stdin,
                    env=env,
                    check=False,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                times[name].append(time.perf_counter() - start)
    return times


def _paired_ratio(ours: list[float], baseline: list[float]) -> float:
    """The median of the round-by-round ratios (a slow moment of the machine hits both
    runs of a round, and drops out of their ratio)."""
    return statistics.median(a / b for a, b in zip(ours, baseline, strict=True))


def _as_is(*argv: str) -> Callable[[], Prepared]:
    return lambda: (list(argv), None)


FIXED_ROUNDS = int(os.environ.get("BENCH_FIXED_ROUNDS", "20"))


def bench_fixed(b: Bench) -> None:
    """The fixed cost of a compaction that persists (issue 23): one chunk, a real row,
    ``--delete``, as a whole process, against the stack's import floor, alternately.

    Run alone with ``bench/run.py fixed`` (``BENCH_FIXED_ROUNDS`` rounds, default 20).
    """
    audit = Path(tempfile.mkdtemp()) / "audit.log"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": b.prefix,
        "DATABASE_URL": b.pg_dsn,
        "METADATA_VALIDATION_LOG": str(audit),
    }
    genbuf = str(BIN / "genbuf")

    def persisting() -> Prepared:
        gen = b.repository.create_generation(7)
        b.buffer.push_chunk(7, gen, b'{"answer": 42}')
        return [genbuf, "compact-generation", "7", str(gen), "--delete"], None

    rounds = _processes(
        {"floor": _as_is(sys.executable, "-c", FLOOR), "genbuf": persisting},
        env,
        repeat=FIXED_ROUNDS,
    )
    b.flush()
    b.add(
        Row(
            "7. fixed cost: compact-generation that persists",
            ms(statistics.median(rounds["genbuf"])),
            ms(statistics.median(rounds["floor"])),
            _paired_ratio(rounds["genbuf"], rounds["floor"]),
            Target.at_most(1.25),
            f"one chunk, a real row, --delete; baseline: python -c '{FLOOR}'; medians of "
            f"{FIXED_ROUNDS} alternating rounds, the ratio round by round",
        )
    )


def bench_processes(b: Bench) -> None:
    """Start-up (the same command on trivial input) against the stack's import floor, and
    the work of a whole command (its time minus that fixed cost) against a raw script's."""
    audit = Path(tempfile.mkdtemp()) / "audit.log"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": b.prefix,
        "DATABASE_URL": b.pg_dsn,
        "GENERATION_CHUNKS_BACKUP": "true",
        "METADATA_VALIDATION_LOG": str(audit),
    }
    genbuf = str(BIN / "genbuf")
    missing = "2000000000"
    rounds = _processes(
        {
            "floor": _as_is(sys.executable, "-c", FLOOR),
            "genbuf": _as_is(genbuf, "compact-generation", "7", missing),
            "help": _as_is(genbuf, "compact-generation", "--help"),
            "raw compact": _as_is(
                sys.executable, str(RAW / "compact.py"), REDIS_URL, b.pg_dsn, "k", missing
            ),
            "genbuf push": _as_is(genbuf, "push", "7", missing),
            "raw push": _as_is(sys.executable, str(RAW / "push.py"), REDIS_URL, "k"),
        },
        env,
        repeat=20,
    )
    fixed = {name: statistics.median(times) for name, times in rounds.items()}
    b.add(
        Row(
            "7. fixed cost: compact-generation on a missing row",
            ms(fixed["genbuf"]),
            ms(fixed["floor"]),
            _paired_ratio(rounds["genbuf"], rounds["floor"]),
            Target.at_most(1.25),
            f"baseline: python -c '{FLOOR}'; medians of 20 rounds, the ratio round by round",
        )
    )
    b.add(
        Row(
            "7. genbuf compact-generation --help",
            ms(fixed["help"]),
            ms(fixed["floor"]),
            _paired_ratio(rounds["help"], rounds["floor"]),
            Target.none("(info)"),
            "baseline: the same import floor",
        )
    )

    n = 5_000 if QUICK else 50_000
    chunks = [f"{i:09d}".encode() + b"c" * 91 for i in range(n)]

    def ours() -> Prepared:
        b.flush()
        gen = b.repository.create_generation(7)
        b.buffer.push_many(7, gen, chunks)
        return [genbuf, "compact-generation", "7", str(gen), "--delete"], None

    def raw() -> Prepared:
        b.flush()
        gen = b.repository.create_generation(7)
        key = f"{b.prefix}raw:compact:{gen}"
        pipe = b.redis.pipeline(transaction=False)
        for start in range(0, n, 1000):
            pipe.rpush(key, *chunks[start : start + 1000])
        pipe.execute()
        return [sys.executable, str(RAW / "compact.py"), REDIS_URL, b.pg_dsn, key, str(gen)], None

    whole = {
        name: statistics.median(times)
        for name, times in _processes({"ours": ours, "raw": raw}, env, repeat=REPEAT).items()
    }
    ours_work = whole["ours"] - fixed["genbuf"]
    raw_work = whole["raw"] - fixed["raw compact"]
    b.add(
        Row(
            f"7. work of a {n:,}-chunk compaction (backups on)",
            ms(ours_work),
            ms(raw_work),
            ours_work / raw_work,
            Target.at_most(1.5),
            f"whole process minus its fixed cost: genbuf {ms(whole['ours'])}, "
            f"raw script (lock, LRANGE, UPDATE, executemany backups, LTRIM) {ms(whole['raw'])}",
        )
    )

    lines = 200_000 if QUICK else 1_000_000
    with tempfile.NamedTemporaryFile(delete=False) as handle:
        for i in range(lines):
            handle.write(f"{i:09d}".encode() + b"z" * 90 + b"\n")
        path = Path(handle.name)

    def flushed(*argv: str) -> Callable[[], Prepared]:
        def prepare() -> Prepared:
            b.flush()
            return list(argv), path

        return prepare

    raw_push = (sys.executable, str(RAW / "push.py"), REDIS_URL, f"{b.prefix}raw:push")
    pushes = {
        name: statistics.median(times)
        for name, times in _processes(
            {"ours": flushed(genbuf, "push", "8", "1"), "raw": flushed(*raw_push)},
            env,
            repeat=REPEAT,
        ).items()
    }
    path.unlink()
    ours_work = pushes["ours"] - fixed["genbuf push"]
    raw_work = pushes["raw"] - fixed["raw push"]
    b.add(
        Row(
            f"7. work of genbuf push < {lines:,} lines",
            ms(ours_work),
            ms(raw_work),
            ours_work / raw_work,
            Target.at_most(1.25),
            f"whole process minus its fixed cost: genbuf {ms(pushes['ours'])}, "
            f"raw script (pipelined variadic RPUSH of 1,000) {ms(pushes['raw'])}",
        )
    )


# -- 8. status over a million buffer keys -------------------------------------------------


_PEAK = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _timed_peak(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one process (measured by a parent of its own)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *argv], env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, int(done.stdout.strip()) / 1024


STATUS_ORG = 8888


def _fill_buffers(b: Bench, ids: list[int]) -> None:
    """A buffer per id (a list of two chunks and a meta hash each: 2 keys), pipelined."""
    stamp = datetime.now(UTC).isoformat()
    for start in range(0, len(ids), 2000):
        pipe = b.redis.pipeline(transaction=False)
        for gen in ids[start : start + 2000]:
            key = f"{b.prefix}app:scenario_planning:org:{STATUS_ORG}:generation:{gen}:chunks"
            pipe.rpush(key, b"x" * 40, b"y" * 40)
            meta = {"chunk_count": 2, "bytes": 80, "last_chunk_at": stamp}
            if gen % 2:
                meta["finished_at"] = stamp
            pipe.hset(key + ":meta", mapping=meta)
            pipe.expire(key, 86400)
            pipe.expire(key + ":meta", 86400)
        pipe.execute()


def bench_status(b: Bench) -> None:
    """genbuf status over N buffer keys: time against a raw script doing the same reads,
    and peak memory at 10% and 100% of N (a survey's memory must not grow with N)."""
    keys = 100_000 if QUICK else 1_000_000
    buffers = keys // 2
    b.flush()
    ids = [
        row[0]
        for row in b.pg.execute(
            "INSERT INTO scenario_generations (organization_id, metadata) "
            "SELECT %s, '{}' FROM generate_series(1, %s) RETURNING id",
            (STATUS_ORG, buffers),
        )
    ]
    b.pg.commit()
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": b.prefix,
        "DATABASE_URL": b.pg_dsn,
        "METADATA_VALIDATION_LOG": str(Path(tempfile.mkdtemp()) / "audit.log"),
    }
    genbuf = [str(BIN / "genbuf"), "status", "--json"]
    raw = [sys.executable, str(RAW / "status.py"), REDIS_URL, b.pg_dsn, b.prefix]
    _fill_buffers(b, ids[: buffers // 10])
    small = _timed_peak(genbuf, env)
    _fill_buffers(b, ids[buffers // 10 :])
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for _ in range(3):
        ours.append(_timed_peak(genbuf, env))
        theirs.append(_timed_peak(raw, env))
    ours_time = statistics.median(t for t, _ in ours)
    raw_time = statistics.median(t for t, _ in theirs)
    ours_peak = max(p for _, p in ours)
    b.add(
        Row(
            f"8. status --json over {keys:,} buffer keys",
            f"{ours_time:.2f} s",
            f"{raw_time:.2f} s",
            ours_time / raw_time,
            Target.at_most(1.5),
            f"{keys / ours_time:,.0f} keys/s; raw script: SCAN COUNT 1000, the same 8 "
            "commands per buffer pipelined, one SELECT per page; medians of 3",
        )
    )
    b.add(
        Row(
            f"8. status peak RSS, {keys:,} keys vs {keys // 10:,}",
            f"{ours_peak:.0f} MB",
            f"{small[1]:.0f} MB",
            ours_peak / small[1],
            Target.at_most(1.2),
            f"bounded memory: 10x the keys, the same peak (raw script: "
            f"{max(p for _, p in theirs):.0f} MB)",
        )
    )
    b.flush()
    b.sql("DELETE FROM scenario_generations WHERE organization_id = %s", (STATUS_ORG,))


# -- 9. a fleet of workers: one node and a Redis Cluster ----------------------------------

WORKER_ORG = 9999
FLEET = (1, 2, 4)
# issue 23: 1 process >= 0.75x the raw worker, 4 processes >= 0.6x raw's 4 (2: no target)
FLEET_TARGETS = {1: Target.at_least(0.75), 4: Target.at_least(0.6)}
SERIAL = (1, 4)  # fleets also run with --concurrency 1, for the like-for-like 4/1 scaling


class _Fleet:
    """Workers (genbuf's or the raw script's) against one Redis target, and their work."""

    def __init__(self, b: Bench, nodes: str | None) -> None:
        self.b = b
        self.nodes = nodes  # REDIS_CLUSTER_NODES, or None: the single Redis
        self.prefix = f"genbuf-bench:{uuid.uuid4().hex[:8]}:"
        self.settings = Settings(
            redis_url=REDIS_URL,
            redis_cluster_nodes=nodes,
            redis_prefix=self.prefix,
            database_url=b.pg_dsn,
            generation_chunks_backup=False,
            metadata_validation_log=Path(tempfile.mkdtemp()) / "audit.log",
        )
        self.buffer = GenerationBuffer.from_settings(self.settings)
        self.client = self.buffer.client
        self.env = {
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": self.prefix,
            "DATABASE_URL": b.pg_dsn,
            "GENERATION_CHUNKS_BACKUP": "false",
            "METADATA_VALIDATION_LOG": str(self.settings.metadata_validation_log),
            **({"REDIS_CLUSTER_NODES": nodes} if nodes else {}),
        }
        self.raw_stream = f"{self.prefix}raw:events"
        self.raw_target = f"cluster:{nodes.split(',')[0]}" if nodes else REDIS_URL
        self.ids: list[int] = []

    def flush(self) -> None:
        """Remove this fleet's keys (on every primary of a cluster)."""
        for key in list(self.client.scan_iter(match=self.prefix.replace(":", "\\:") + "*")):
            self.client.delete(key)

    def fill(self, gens: int, chunks: int) -> None:
        """``gens`` new rows, each with a buffer of ``chunks`` chunks (not announced)."""
        self.flush()
        self.ids = [self.b.repository.create_generation(WORKER_ORG) for _ in range(gens)]
        body = _json_body(chunks)
        for gen in self.ids:
            self.buffer.push_many(WORKER_ORG, gen, body)

    def start(
        self, n: int, raw: bool, counted: Path | None = None, concurrency: int | None = None
    ) -> list[subprocess.Popen[bytes]]:
        """``n`` workers, started and waiting for events (each has said so on stderr);
        ``counted``: one worker, its round trips counted into that file (bench/trips.py);
        ``concurrency``: genbuf's --concurrency (None: its default)."""
        logs = [Path(tempfile.mkstemp(suffix=".log")[1]) for _ in range(n)]
        if raw:
            self.client.xgroup_create(self.raw_stream, "raw", id="0", mkstream=True)
            argv = [sys.executable, str(RAW / "worker.py"), self.raw_target, self.b.pg_dsn]
            commands = [[*argv, self.raw_stream, "raw", f"raw-{i}"] for i in range(n)]
        else:
            argv = [str(BIN / "genbuf"), "worker", "--idle", "1h"]
            if concurrency is not None:
                argv += ["--concurrency", str(concurrency)]
            commands = [argv] * n
        if counted is not None:
            trips = [sys.executable, str(ROOT / "bench" / "trips.py"), str(counted)]
            # the raw script's path and arguments, or genbuf's sub-command and options
            commands = [[*trips, *(c[1:] if raw else ["genbuf", *c[1:]])] for c in commands]
        workers = [
            subprocess.Popen(
                command, env=self.env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
            )
            for command, log in zip(commands, logs, strict=True)
        ]
        deadline = time.monotonic() + 60
        while not all(b"waiting" in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                _stop(workers)
                raise RuntimeError(f"workers did not start: {logs[0].read_text()[-500:]}")
            time.sleep(0.05)
        return workers

    def announce(self, gen: int, raw: bool) -> None:
        """What a producer does at the end of a stream: genbuf's finish(), or a raw XADD."""
        if raw:
            key = self.buffer.key_for(WORKER_ORG, gen, None)
            self.client.xadd(self.raw_stream, {"key": key, "generation_id": gen})
        else:
            self.buffer.finish(WORKER_ORG, gen)

    def wait_compacted(self, ids: list[int]) -> None:
        """Until every row of ``ids`` holds its artifact."""
        query = (
            "SELECT count(*) FROM scenario_generations WHERE id = ANY(%s) AND compacted IS NOT NULL"
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            row = self.b.pg.execute(query, (ids,)).fetchone()
            self.b.pg.commit()
            if row is not None and row[0] == len(ids):
                return
            time.sleep(0.01)
        raise RuntimeError("the workers did not compact everything")

    def throughput(
        self, n: int, raw: bool, gens: int, chunks: int, concurrency: int | None = None
    ) -> tuple[float, float, float]:
        """Seconds for ``n`` running workers to compact ``gens`` announced generations,
        the CPU seconds (user + system) the workers spent meanwhile, and the seconds
        the announcing took. The workers are stopped (SIGSTOP) while the generations
        are announced and timed from SIGCONT: a backlog that both fleets drain, not a
        race with this process's announcing loop on the same cores (genbuf's finish()
        marks the stream and announces it; raw's is one XADD: see the finish row)."""
        self.fill(gens, chunks)
        workers = self.start(n, raw, concurrency=concurrency)
        try:
            for worker in workers:
                worker.send_signal(signal.SIGSTOP)
            announcing = time.perf_counter()
            for gen in self.ids:
                self.announce(gen, raw)
            announced = time.perf_counter() - announcing
            cpu = _cpu(workers)
            started = time.perf_counter()
            for worker in workers:
                worker.send_signal(signal.SIGCONT)
            self.wait_compacted(self.ids)
            return time.perf_counter() - started, _cpu(workers) - cpu, announced
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGCONT)
            _stop(workers)

    def trips(self, raw: bool, gens: int, chunks: int) -> dict[str, float]:
        """Round trips to Redis and PostgreSQL per compaction, one worker (bench/trips.py),
        its start-up left out."""
        self.fill(gens, chunks)
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        (worker,) = self.start(1, raw, counted=out)
        try:
            worker.send_signal(signal.SIGUSR1)
            mark = Path(f"{out}.start")
            deadline = time.monotonic() + 30
            while not mark.exists() or not mark.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError("the counted worker wrote no mark")
                time.sleep(0.01)
            for gen in self.ids:
                self.announce(gen, raw)
            self.wait_compacted(self.ids)
        finally:
            _stop([worker])
        before = json.loads(mark.read_text())
        after = json.loads(out.read_text())
        return {side: (after[side] - before[side]) / gens for side in after}

    def latency(self, raw: bool, per_second: float, seconds: float) -> tuple[float, float]:
        """p50 and p95 (ms) from a producer's end of stream to the row's compacted_at, at a
        steady rate of generations, with two workers."""
        self.flush()
        workers = self.start(2, raw)
        finished: dict[int, float] = {}
        body = _json_body(20)
        started = time.perf_counter()
        try:
            for number in range(int(per_second * seconds)):
                gen = self.b.repository.create_generation(WORKER_ORG)
                self.buffer.push_many(WORKER_ORG, gen, body)
                lag = number / per_second - (time.perf_counter() - started)
                if lag > 0:
                    time.sleep(lag)
                finished[gen] = time.time()
                self.announce(gen, raw)
            self.wait_compacted(list(finished))
        finally:
            _stop(workers)
        rows = self.b.pg.execute(
            "SELECT id, extract(epoch FROM compacted_at) FROM scenario_generations "
            "WHERE id = ANY(%s)",
            (list(finished),),
        ).fetchall()
        self.b.pg.commit()
        waits = sorted((float(at) - finished[gen]) * 1000 for gen, at in rows)
        return waits[len(waits) // 2], waits[int(len(waits) * 0.95) - 1]

    def close(self) -> None:
        """Remove the keys and the rows."""
        self.flush()
        self.buffer.close()
        self.b.sql("DELETE FROM scenario_generations WHERE organization_id = %s", (WORKER_ORG,))


def _json_body(chunks: int) -> list[bytes]:
    """A finished LLM response: valid JSON in ``chunks`` chunks of ~100 bytes (the raw
    worker validates nothing either, so genbuf records no issue for it)."""
    return [b"["] + [b'"' + b"b" * 97 + b'",'] * (chunks - 2) + [b'"end"]']


def _cpu(workers: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user + system, every thread) the processes have used so far."""
    ticks = 0
    for worker in workers:
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=120)


def bench_workers(b: Bench) -> None:
    """Compactions per second with 1, 2 and 4 worker processes, on one Redis and on a
    3-primary Redis Cluster, beside the raw worker script; the 4/1 scaling; and the
    finished-to-compacted latency at a steady producer rate."""
    sys.path.insert(0, str(ROOT))  # the tests' local cluster, shared with the bench
    from tests.support.cluster import LocalCluster  # noqa: PLC0415

    gens, chunks = (120, 20) if QUICK else (400, 20)
    repeat = max(1, min(REPEAT, 3))
    where = os.environ.get("BENCH_FLEET", "one,cluster").split(",")  # one node, cluster, both
    cluster = LocalCluster(Path(tempfile.mkdtemp()), primaries=3).start()
    try:
        for label, nodes in (("one node", None), ("3-primary cluster", cluster.nodes)):
            if ("cluster" if nodes else "one") not in where:
                continue
            fleet = _Fleet(b, nodes)
            try:
                rates: dict[tuple[int, bool], float] = {}
                cpus: dict[tuple[int, bool], float] = {}
                announcing: dict[bool, list[float]] = {False: [], True: []}
                serial: dict[int, float] = {}
                for n in FLEET:
                    times: dict[bool, list[float]] = {False: [], True: []}
                    cpu: dict[bool, list[float]] = {False: [], True: []}
                    one_by_one: list[float] = []
                    for rep in range(repeat):
                        for raw in (False, True) if rep % 2 == 0 else (True, False):
                            seconds, used, announced = fleet.throughput(n, raw, gens, chunks)
                            times[raw].append(seconds)
                            cpu[raw].append(used / gens)
                            announcing[raw].append(announced / gens)
                        if n in SERIAL:
                            one_by_one.append(fleet.throughput(n, False, gens, chunks, 1)[0])
                    for raw in (False, True):
                        rates[n, raw] = gens / statistics.median(times[raw])
                        cpus[n, raw] = statistics.median(cpu[raw])
                    if one_by_one:
                        serial[n] = gens / statistics.median(one_by_one)
                    b.add(
                        Row(
                            f"9. worker, {label}: {n} process{'es' if n > 1 else ''}",
                            f"{rates[n, False]:,.0f} gen/s",
                            f"{rates[n, True]:,.0f} gen/s",
                            rates[n, False] / rates[n, True],
                            FLEET_TARGETS.get(n, Target.none("(info)")),
                            f"a backlog of {gens} announced generations x {chunks} chunks, "
                            "genbuf: its default --concurrency 4; raw: one loop of XREADGROUP, "
                            "LRANGE, UPDATE, DEL, XACK",
                        )
                    )
                    b.add(
                        Row(
                            f"9. worker, {label}: CPU per compaction, {n} "
                            f"process{'es' if n > 1 else ''}",
                            ms(cpus[n, False]),
                            ms(cpus[n, True]),
                            cpus[n, False] / cpus[n, True],
                            Target.none("(info)"),
                            "the workers' user + system CPU (/proc/PID/stat) over the run, "
                            "per generation compacted; lower is better",
                        )
                    )
                ours = rates[4, False] / rates[1, False]
                theirs = rates[4, True] / rates[1, True]
                b.add(
                    Row(
                        f"9. worker, {label}: 4 processes / 1",
                        f"{ours:.2f}x",
                        f"{theirs:.2f}x",
                        ours / theirs,
                        Target.none("(info)"),
                        f"scaling on {os.cpu_count()} cores (PostgreSQL and Redis on them too); "
                        "genbuf's one process already runs 4 compactions at once, raw's one",
                    )
                )
                ours = serial[4] / serial[1]
                b.add(
                    Row(
                        f"9. worker, {label}: 4 processes / 1, one compaction at a time",
                        f"{ours:.2f}x",
                        f"{theirs:.2f}x",
                        ours / theirs,
                        Target.at_least(0.8),
                        "genbuf with --concurrency 1, as the raw loop: how processes scale "
                        f"beside each other (the sweep lock, the stream, the rows) on "
                        f"{os.cpu_count()} cores",
                    )
                )
                b.add(
                    Row(
                        f"9. producer's end of stream, {label}",
                        f"{statistics.median(announcing[False]) * 1e6:,.0f} us",
                        f"{statistics.median(announcing[True]) * 1e6:,.0f} us",
                        statistics.median(announcing[False]) / statistics.median(announcing[True]),
                        Target.none("(info)"),
                        "per generation: genbuf's finish() (the mark, then the announcement: "
                        "one round trip on one node) against one XADD",
                    )
                )
                ours_t = fleet.trips(False, gens, chunks)
                raw_t = fleet.trips(True, gens, chunks)
                b.add(
                    Row(
                        f"9. worker, {label}: round trips per compaction, Redis + PostgreSQL",
                        f"{ours_t['redis']:.1f} + {ours_t['postgres']:.1f}",
                        f"{raw_t['redis']:.1f} + {raw_t['postgres']:.1f}",
                        sum(ours_t.values()) / sum(raw_t.values()),
                        Target.none("(info)"),
                        "one worker, counted by bench/trips.py (a pipeline is one trip; "
                        "BEGIN and COMMIT are trips); lower is better",
                    )
                )
                ours_p = fleet.latency(False, 20, 10)
                raw_p = fleet.latency(True, 20, 10)
                b.add(
                    Row(
                        f"9. worker, {label}: finished to compacted, p50 / p95",
                        f"{ours_p[0]:.0f} / {ours_p[1]:.0f} ms",
                        f"{raw_p[0]:.0f} / {raw_p[1]:.0f} ms",
                        ours_p[1] / raw_p[1],
                        Target.none("(info)"),
                        "20 generations/s for 10 s, 2 workers; ratio of the p95s",
                    )
                )
            finally:
                fleet.close()
    finally:
        cluster.stop()


# -- 10. offloaded compactions and read-back ----------------------------------------------


def _moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3-protocol server on a loopback port, and its endpoint."""
    import socket  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()  # noqa: S310
            break
        except OSError:
            time.sleep(0.1)
    bucket = urllib.request.Request(f"{endpoint}/bench", method="PUT")  # noqa: S310
    urllib.request.urlopen(bucket, timeout=10).close()  # noqa: S310
    return server, endpoint


def _offload_env(b: Bench, store_url: str, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
    return {
        **env,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": b.prefix,
        "DATABASE_URL": b.pg_dsn,
        "GENERATION_CHUNKS_BACKUP": "false",
        "METADATA_VALIDATION_LOG": str(b.settings.metadata_validation_log),
        "GENERATION_OFFLOAD_URL": store_url,
        "GENERATION_OFFLOAD_BYTES": str(8 * 1024 * 1024),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def _offload_case(
    b: Bench, label: str, mb: int, *, store_url: str, endpoint: str, repeat: int
) -> None:
    """One size against one store: compaction time and peak RSS beside the raw script,
    then show-generation's read-back beside a raw streamed GET."""
    env = _offload_env(b, store_url, endpoint)
    line = (json.dumps({"token": uuid.uuid4().hex * 1000}) + "\n").encode()  # ~32 KB chunks
    count = mb * 1024 * 1024 // len(line)
    source = f"{b.prefix}offload-source"
    pipe = b.redis.pipeline(transaction=False)
    for start in range(0, count, 256):
        pipe.rpush(source, *[line] * min(256, count - start))
    pipe.execute()
    size = count * len(line)
    ours: list[tuple[float, float]] = []
    raw: list[tuple[float, float]] = []
    gen = 0
    for rep in range(repeat):
        for which in ("genbuf", "raw") if rep % 2 == 0 else ("raw", "genbuf"):
            gen = b.repository.create_generation(7)
            key = f"{b.prefix}app:scenario_planning:org:7:generation:{gen}:chunks"
            b.redis.copy(source, key)
            if which == "genbuf":
                argv = [str(BIN / "genbuf"), "compact-generation", "7", str(gen), "--delete"]
                ours.append(_timed_peak(argv, env))
                shown = gen
            else:
                script = str(ROOT / "bench" / "raw" / "offload.py")
                argv = [sys.executable, script, REDIS_URL, b.pg_dsn, key, str(gen), store_url]
                raw.append(_timed_peak([*argv, endpoint], env))
    b.redis.delete(source)
    time_ours = statistics.median(t for t, _ in ours)
    time_raw = statistics.median(t for t, _ in raw)
    peak_ours = max(m for _, m in ours)
    peak_raw = max(m for _, m in raw)
    b.add(
        Row(
            f"10. offloaded compaction, {mb} MB to {label} (process)",
            ms(time_ours),
            ms(time_raw),
            time_ours / time_raw,
            Target.at_most(2.5),
            f"{size / time_ours / 2**20:,.0f} MB/s; genbuf reads Redis twice (hash, then "
            "upload under the sha256), the raw script once",
        )
    )
    b.add(
        Row(
            f"10. peak RSS of that compaction, {mb} MB to {label}",
            f"{peak_ours:,.0f} MB",
            f"{peak_raw:,.0f} MB",
            peak_ours / peak_raw,
            Target.at_most(2),
            f"bound 100 MB: {'met' if peak_ours <= 100 else 'MISSED'}; both include the "
            "interpreter and libraries (genbuf's import floor is ~75 MB)",
        )
    )
    row = b.repository.get_generation(shown)
    assert row is not None and row.compacted is not None
    path = row.compacted.removeprefix(store_url + "/")
    show = [str(BIN / "genbuf"), "show-generation", "7", str(shown)]
    raw_read = [sys.executable, str(ROOT / "bench" / "raw" / "offload.py"), "-", "-", "-"]
    raw_read += ["read", store_url, endpoint, path]
    reads_ours = [_timed_peak(show, env) for _ in range(repeat)]
    reads_raw = [_timed_peak(raw_read, env) for _ in range(repeat)]
    read_ours = statistics.median(t for t, _ in reads_ours)
    read_raw = statistics.median(t for t, _ in reads_raw)
    b.add(
        Row(
            f"10. show-generation read-back, {mb} MB from {label}",
            f"{size / read_ours / 2**20:,.0f} MB/s",
            f"{size / read_raw / 2**20:,.0f} MB/s",
            read_raw / read_ours,
            Target.at_least(0.4),
            f"verified by sha256 as it streams; peak RSS {max(m for _, m in reads_ours):,.0f} MB; "
            "genbuf's process fixed cost (~0.35 s: imports, the row, the buffer lookup) "
            "weighs on the smaller size",
        )
    )


def bench_offload(b: Bench) -> None:
    """Offloaded compactions of 64 MB (S3 protocol: moto's server) and 1 GB (a directory:
    moto keeps objects in its own memory), and their read-back."""
    work = Path(tempfile.mkdtemp(prefix="genbuf-bench-offload-"))
    server, endpoint = _moto(work / "moto.log")
    try:
        _offload_case(
            b,
            "S3 (moto)",
            16 if QUICK else 64,
            store_url="s3://bench/artifacts",
            endpoint=endpoint,
            repeat=3,
        )
        directory = f"file://{work / 'objects'}"
        _offload_case(
            b,
            "a directory",
            128 if QUICK else 1024,
            store_url=directory,
            endpoint=endpoint,
            repeat=2,
        )
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def machine() -> list[str]:
    """A description of the machine and servers."""
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = int(next(x for x in meminfo if x.startswith("MemTotal")).split()[1])
    redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    with psycopg.connect(ADMIN_URL) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem_kb / 1024 / 1024:.1f} GiB",
        f"- {platform.platform()}; Python {platform.python_version()}",
        f"- Redis {redis_version} and PostgreSQL {pg_version} on the same machine (loopback)",
        f"- medians of {REPEAT} repetitions (fixed costs: 20 rounds); "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
    ]


def write_results(b: Bench, description: list[str]) -> None:
    lines = [
        "# Benchmark results",
        "",
        "`make bench` on:",
        "",
        *description,
        "",
        "| operation | genbuf | raw baseline | ratio | target | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in b.rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(
            f"| {row.operation.strip()} | {row.genbuf} | {row.baseline} | {ratio} | "
            f"{row.target} | {met} | {row.note} |"
        )
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    (ROOT / "bench" / "results.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    """Run every benchmark, print them, write bench/results.md."""
    only = set(sys.argv[1:])
    b = Bench()
    description = machine()
    print("\n".join(description))
    print(f"{'operation':<58} {'genbuf':>14} {'raw':>14} {'ratio':>7} {'target':>8}")
    try:
        for name, fn in [
            ("push", bench_push_chunk),
            ("many", bench_push_many),
            ("compact", bench_compact),
            ("batch", bench_batch),
            ("memory", bench_memory),
            ("migrate", bench_migrate),
            ("purge", bench_purge),
            ("fixed", bench_fixed),
            ("processes", bench_processes),
            ("status", bench_status),
            ("workers", bench_workers),
            ("scaling", bench_scaling),
            ("offload", bench_offload),
        ]:
            if not only or name in only:
                fn(b)
    finally:
        b.close()
    if not only:
        write_results(b, description)
    missed = [row.operation for row in b.rows if row.met is False]
    print("all targets met" if not missed else f"targets missed: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
