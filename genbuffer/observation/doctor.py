"""genbuf doctor: can this set-up lose chunks, or has it stopped working?

One check a line, `ok` / `warn` / `fail`, each failure with its hint. A check
that needs an unreachable dependency is not run; the dependency's own check
fails and the command exits 3.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.errors import (
    DatabaseUnavailable,
    DependencyUnavailable,
    GenbufferError,
    RedisUnavailable,
    UsageError,
)
from genbuffer.objects.store import Store, StoreDirectoryMissing
from genbuffer.observation.durability import Check, Status, durability_checks
from genbuffer.prefixes import prefix_report
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.fleet import WorkerBeat
from genbuffer.redis.keyspace import CLUSTER_SLOTS, ClusterShape
from genbuffer.settings import mask_url

__all__ = ["Check", "DoctorOptions", "DoctorReport", "run_doctor"]

SKEW_WARN = timedelta(seconds=1)  # idle judgement compares producers' stamps with this host
SKEW_FAIL = timedelta(seconds=60)
SLOW_PING = 0.05  # seconds


class DoctorReport(Document):
    """What `doctor --json` prints."""

    ok: bool
    unreachable: list[str] = Field(default_factory=list)  # dependencies that did not answer
    checks: list[Check]


@dataclass(frozen=True)
class DoctorOptions:
    """How fresh each cron job's last success must be, and where the audit log goes."""

    cron_max_age: timedelta = timedelta(hours=1)  # compact-pending
    purge_max_age: timedelta = timedelta(days=2)  # purge-chunks (daily), purge-objects
    offloading: bool = False  # GENERATION_OFFLOAD_URL set: purge-objects must run too
    audit_log: Path = Path("storage/logs/metadata-validation.log")
    prefix_note: str | None = None  # Settings.prefix_warning: APP_NAME without REDIS_PREFIX


def run_doctor(
    buffer: Callable[[], GenerationBuffer],
    repository: Callable[[], Repository],
    options: DoctorOptions,
    store: Callable[[], Store | None] = lambda: None,
) -> DoctorReport:
    """Run every check; the adapters are built inside, so a misconfiguration is a check.
    ``store``: the offload object store (None: offloading is off, nothing to check)."""
    checks: list[Check] = []
    unreachable: list[str] = []
    skews: dict[str, float] = {}
    workers = _redis_checks(buffer, checks, skews, unreachable, options.prefix_note)
    _database_checks(repository, checks, skews, options, unreachable, workers=workers)
    if workers:
        checks.append(_workers(workers))
    _store_check(store, checks, unreachable)
    checks.append(_audit_log(options.audit_log))
    checks.append(_clock_skew(skews))
    failed = any(check.status == "fail" for check in checks)
    return DoctorReport(ok=not failed, unreachable=unreachable, checks=checks)


def _redis_checks(
    make: Callable[[], GenerationBuffer],
    checks: list[Check],
    skews: dict[str, float],
    unreachable: list[str],
    prefix_note: str | None = None,
) -> list[WorkerBeat] | None:
    """Reachable (version, latency), eviction, persistence, the prefix; the workers'
    heartbeats (None when Redis could not say)."""
    try:
        buffer = make()
        version, latency, clock = buffer.keyspace.server()
    except (UsageError, RedisUnavailable) as error:
        _failed("redis", error, checks, unreachable)
        return None
    skews["redis"] = (clock - datetime.now(UTC)).total_seconds()
    checks.append(
        Check(
            name="redis",
            status="warn" if latency > SLOW_PING else "ok",
            message=f"{mask_url(buffer.url)} answers: Redis {version}, "
            f"PING {latency * 1000:.1f} ms",
            hint="a slow PING slows every push and compaction" if latency > SLOW_PING else None,
        )
    )
    if (shape := buffer.keyspace.cluster_shape()) is not None:
        checks.append(_cluster(shape))
    checks.extend(durability_checks(buffer))
    checks.append(_prefix(buffer, prefix_note))
    try:
        return buffer.fleet.members()
    except GenbufferError:
        return None


def _workers(beats: list[WorkerBeat]) -> Check:
    """Workers were seen: at least one beats now (else the fleet is down: nothing
    compacts what producers announce)."""
    now = time.time()
    alive = [beat for beat in beats if beat.alive(now)]
    last = int(now - max(beat.at for beat in beats))
    if alive:
        names = ", ".join(beat.consumer for beat in alive[:5])
        return Check(
            name="workers",
            status="ok",
            message=f"{len(alive)} worker(s) alive ({names}), last heartbeat {last}s ago",
        )
    return Check(
        name="workers",
        status="fail",
        message=f"no worker alive: {len(beats)} seen in the last day, the last heartbeat "
        f"{last}s ago",
        hint="is `genbuf worker` still running (systemctl status 'genbuf-worker@*')? "
        "a worker that stops cleanly leaves no heartbeat behind",
    )


def _store_check(
    make: Callable[[], Store | None], checks: list[Check], unreachable: list[str]
) -> None:
    """The offload store answers a listing (read-only: nothing is written to it)."""
    try:
        store = make()
        if store is None:
            return
        started = time.monotonic()
        listed = next(iter(store.objects()), None)
        elapsed = (time.monotonic() - started) * 1000
    except StoreDirectoryMissing as error:  # doctor writes nothing, not even a directory
        checks.append(
            Check(name="object store", status="warn", message=str(error), hint=error.hint)
        )
        return
    except (UsageError, DependencyUnavailable) as error:
        _failed("object store", error, checks, unreachable)
        return
    state = "holds objects" if listed is not None else "is empty"
    checks.append(
        Check(
            name="object store",
            status="ok",
            message=f"{store.url} answers a listing in {elapsed:.1f} ms and {state}",
        )
    )
    if store.is_directory:
        checks.append(_store_permissions(store))


def _store_permissions(store: Store) -> Check:
    """A file:// store and its parent are not open to every user of the host: objects
    hold generations, and whoever can write there can plant what genbuf reads back."""
    try:
        loose = store.permissions()
    except OSError as error:
        return Check(name="object store permissions", status="warn", message=str(error))
    if not loose:
        return Check(
            name="object store permissions",
            status="ok",
            message=f"{store.location.directory} is not world-readable or -writable",
        )
    return Check(
        name="object store permissions",
        status="warn",
        message="; ".join(loose),
        hint=f"chmod 700 {store.location.directory} (750 and chgrp with "
        "GENERATION_OFFLOAD_FILE_GROUP), and keep its parent writable by its owner only",
    )


def _cluster(shape: ClusterShape) -> Check:
    """A cluster serves every slot (else some buffers cannot be written or read)."""
    whole = shape.state == "ok" and shape.slots_covered == CLUSTER_SLOTS
    return Check(
        name="cluster",
        status="ok" if whole else "fail",
        message=shape.summary(),
        hint=None if whole else "some slots have no primary: check CLUSTER NODES",
    )


def _failed(name: str, error: GenbufferError, checks: list[Check], unreachable: list[str]) -> None:
    """A dependency's own check failed: not configured (a usage error), or unreachable
    (the other checks that need it are not run, and the command exits 3)."""
    checks.append(Check(name=name, status="fail", message=error.message, hint=error.hint))
    if isinstance(error, DependencyUnavailable):
        unreachable.append(name)


def _prefix(buffer: GenerationBuffer, note: str | None = None) -> Check:
    """Buffers under the configured prefix, or under another one (fail: it names it);
    none anywhere yet while APP_NAME is set without REDIS_PREFIX: warn (``note``)."""
    report = prefix_report(buffer)
    shown = repr(report.configured)
    if report.buffers_here:
        return Check(name="prefix", status="ok", message=f"buffers found under {shown}")
    if not report.elsewhere:
        message = f"no buffer yet (prefix {shown})"
        if note is not None:
            return Check(name="prefix", status="warn", message=message, hint=note)
        return Check(name="prefix", status="ok", message=message)
    best = max(report.elsewhere.items(), key=lambda item: (item[1], item[0]))[0]
    others = ", ".join(f"{p!r} ({n} keys)" for p, n in sorted(report.elsewhere.items()))
    return Check(
        name="prefix",
        status="fail",
        message=f"no buffer under the configured prefix {shown}, but some under {others}",
        hint=f"set REDIS_PREFIX={best}",
    )


def _database_checks(
    make: Callable[[], Repository],
    checks: list[Check],
    skews: dict[str, float],
    options: DoctorOptions,
    unreachable: list[str],
    *,
    workers: list[WorkerBeat] | None = None,
) -> None:
    """Reachable, schema current, each cron job's last success, and the jobs' leases."""
    from genbuffer.db.check import check_schema  # noqa: PLC0415

    try:
        repository = make()
        if repository.dialect != "sqlite":  # the embedded file has no clock of its own
            clock = repository.observations.now()
            skews["database"] = (clock - datetime.now(UTC)).total_seconds()
        problems = check_schema(repository.engine, repository.url)
    except (UsageError, DatabaseUnavailable) as error:
        _failed("database", error, checks, unreachable)
        return
    checks.append(
        Check(name="database", status="ok", message=f"{mask_url(repository.url)} answers")
    )
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        said = "; ".join(f"{_where(p.table, p.column)}: {p.message}" for p in errors)
        checks.append(
            Check(name="schema", status="fail", message=said[:500], hint="genbuf db upgrade")
        )
    else:
        warned = [p for p in problems if p.severity == "warning"]
        checks.append(
            Check(
                name="schema",
                status="warn" if warned else "ok",
                message="current" if not warned else f"current, {len(warned)} warnings",
                hint="genbuf db check shows them" if warned else None,
            )
        )
        checks.extend(_cron(repository, options, workers or []))
        checks.extend(_leases(repository))


def _cron(repository: Repository, options: DoctorOptions, workers: list[WorkerBeat]) -> list[Check]:
    """Each cron job's last successful run against its maximum age; live workers
    (a heartbeat) compact in compact-pending's stead (a worker-only deployment)."""
    now_epoch = time.time()
    alive = sum(1 for beat in workers if beat.alive(now_epoch))
    limits = {"compact-pending": options.cron_max_age, "purge-chunks": options.purge_max_age}
    if options.offloading:
        limits["purge-objects"] = options.purge_max_age
    runs = repository.observations.last_runs(tuple(limits))
    now = datetime.now(UTC)
    found: list[Check] = []
    for job, limit in limits.items():
        last, last_ok = runs[job]
        name = f"cron {job}"
        if job == "compact-pending" and alive:
            said = "none recorded" if last is None else f"last success at {last:%Y-%m-%d %H:%M:%S}Z"
            found.append(
                Check(
                    name=name,
                    status="ok",
                    message=f"{alive} live worker(s) compact (genbuf worker); cron runs: {said}",
                )
            )
            continue
        if last is None:
            found.append(
                Check(
                    name=name,
                    status="warn",
                    message=f"no successful run of {job} recorded",
                    hint=f"schedule `genbuf {job}` (the cron lines of docs/operations.md)",
                )
            )
            continue
        age = now - last
        stale = age > limit
        failing = " (its last run failed)" if last_ok is False else ""
        found.append(
            Check(
                name=name,
                status="fail" if stale else "ok",
                message=f"last success {int(age.total_seconds())}s ago"
                f" (at {last:%Y-%m-%d %H:%M:%S}Z; limit {int(limit.total_seconds())}s){failing}",
                hint=f"is the {job} cron line still running? see its log" if stale else None,
            )
        )
    return found


def _leases(repository: Repository) -> list[Check]:
    """How cron jobs exclude each other, which run holds each job now, and any lease
    held past its expiry (its run died or lost the database: the next run takes it)."""
    from genbuffer.db.leases import mechanism  # noqa: PLC0415
    from genbuffer.operations.exclusion import LeaseState  # noqa: PLC0415

    clock, rows = repository.leases.all()
    found = [
        Check(
            name="job exclusion",
            status="ok",
            message=mechanism(repository.dialect, repository.lease_ttl),
        )
    ]
    states = [LeaseState.of(row, clock) for row in rows if row.released_at is None]
    for lease in states:
        expired = lease.state == "expired"
        found.append(
            Check(
                name=f"lease {lease.job}",
                status="warn" if expired else "ok",
                message=lease.describe(),
                hint=f"if {lease.host} pid {lease.pid} still runs, it cannot renew: see its "
                "log; else nothing to do"
                if expired
                else None,
            )
        )
    if not states:
        found.append(Check(name="job leases", status="ok", message="no cron job running"))
    return found


def _audit_log(path: Path) -> Check:
    """METADATA_VALIDATION_LOG can be appended to (its directory is created on first use)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if path.exists():
        usable = path.is_file() and os.access(path, os.W_OK)
    else:  # created with its missing directories under the nearest existing one
        usable = ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)
    if usable:
        return Check(name="audit log", status="ok", message=f"{path} is writable")
    return Check(
        name="audit log",
        status="fail",
        message=f"{path} cannot be written: validation issues would not be logged",
        hint="set METADATA_VALIDATION_LOG to a writable file path, or fix the permissions",
    )


def _clock_skew(skews: dict[str, float]) -> Check:
    """This host against Redis's TIME and the database's now() (each read at once)."""
    if not skews:
        return Check(name="clock", status="warn", message="no server answered to compare with")
    worst = max(abs(value) for value in skews.values())
    said = ", ".join(f"{name} {value:+.3f}s" for name, value in skews.items())
    if worst > SKEW_FAIL.total_seconds():
        status: Status = "fail"
    elif worst > SKEW_WARN.total_seconds():
        status = "warn"
    else:
        status = "ok"
    return Check(
        name="clock",
        status=status,
        message=f"against this host: {said}",
        hint=None
        if status == "ok"
        else "run NTP everywhere: idle buffers are judged by producers' timestamps",
    )


def _where(table: str, column: str | None) -> str:
    return f"{table}.{column}" if column else table
