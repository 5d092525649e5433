"""Job leases: which run of a cron job may work now, as rows of `genbuf_job_leases`.

Every operation is one short transaction of single statements, so the lease holds
behind a pooler in transaction mode (PgBouncer, RDS Proxy, Supavisor, ProxySQL),
where a session advisory lock stays on whichever server connection took it.

- take: read the job's row; none: insert it (a unique-key race is retried); held by
  another run and not expired: refused, with its holder; expired or released: a
  compare-and-set on the `token` it was read with (``UPDATE … WHERE token = :seen``),
  which exactly one of two racing runs wins on every database (PostgreSQL re-checks
  the WHERE on the row's newest version, InnoDB's UPDATE reads the latest one,
  SQLite writes one transaction at a time).
- renew: moves `expires_at` on, while the token is still the holder's.
- release: marks the row released (the next run takes it at once).

Times come from the database server's clock (``now()``, ``UTC_TIMESTAMP(6)``; the
host's for SQLite, a local file), so no two hosts' clocks are ever compared.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, text, update
from sqlalchemy import exc as sa_exc

from genbuffer.db.engine import database_errors
from genbuffer.db.rows import LEASES

__all__ = ["RENEWALS_PER_TTL", "JobLeases", "LeaseRow", "Taken", "mechanism"]

RENEWALS_PER_TTL = 3  # a renewal may fail twice (a blip) before the lease lapses
TAKE_ATTEMPTS = 5  # reads and compare-and-sets before a take gives up to a racing run
_PG_NOW = text("SELECT now()")
_MYSQL_NOW = text("SELECT UTC_TIMESTAMP(6)")


@dataclass(frozen=True)
class LeaseRow:
    """One job's lease as its row says: who took it, until when, and whether released."""

    job: str
    token: str
    host: str
    pid: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    released_at: datetime | None

    def held(self, now: datetime) -> bool:
        """Whether a run holds it at ``now`` (taken, not released, not expired)."""
        return self.released_at is None and self.expires_at > now

    def stale(self, now: datetime) -> bool:
        """Whether it was never released and has expired: its holder died or hangs."""
        return self.released_at is None and self.expires_at <= now


@dataclass(frozen=True)
class Taken:
    """What a take found: the lease is ours (``token``) or another run's (``holder``)."""

    now: datetime  # the database's clock at the take
    token: str | None = None
    holder: LeaseRow | None = None  # refused: the run that holds it
    took_over: LeaseRow | None = None  # taken from a holder that never released it

    @property
    def acquired(self) -> bool:
        """Whether this run holds the lease now."""
        return self.token is not None


class JobLeases:
    """The lease rows of one database: take, renew, release, and read them all."""

    def __init__(self, engine: Engine, url: str, ttl: timedelta) -> None:
        self.engine = engine
        self.url = url
        self.ttl = ttl

    @property
    def shared(self) -> bool:
        """Whether other processes can see the rows (an in-memory SQLite is private)."""
        database = self.engine.url.database
        return self.engine.dialect.name != "sqlite" or database not in (None, "", ":memory:")

    def take(self, job: str, host: str, pid: int) -> Taken:
        """Take ``job``'s lease for ``ttl`` unless another run holds it."""
        seen: LeaseRow | None = None
        for _ in range(TAKE_ATTEMPTS):
            try:
                with database_errors(self.url), self.engine.begin() as connection:
                    now = database_now(connection)
                    seen = _read(connection, job)
                    if seen is not None and seen.held(now):
                        return Taken(now=now, holder=seen)
                    token = uuid.uuid4().hex
                    values = {
                        "token": token,
                        "host": host[:255],
                        "pid": pid,
                        "acquired_at": now,
                        "renewed_at": now,
                        "expires_at": now + self.ttl,
                        "released_at": None,
                    }
                    if _write(connection, job, seen, values):
                        return Taken(
                            now=now,
                            token=token,
                            took_over=seen if seen is not None and seen.stale(now) else None,
                        )
            except sa_exc.IntegrityError:
                continue  # another run inserted the row first: read it again
        # every attempt lost a race: one of the racing runs holds it
        return Taken(now=datetime.now(UTC), holder=seen)

    def renew(self, job: str, token: str) -> datetime | None:
        """Extend the lease by ``ttl``; its new expiry, or None if it is no longer ours."""
        with database_errors(self.url), self.engine.begin() as connection:
            now = database_now(connection)
            expires = now + self.ttl
            done = connection.execute(
                update(LEASES)
                .where(
                    LEASES.c.job == job,
                    LEASES.c.token == token,
                    LEASES.c.released_at.is_(None),
                )
                .values(renewed_at=now, expires_at=expires)
            )
        return expires if done.rowcount == 1 else None

    def release(self, job: str, token: str) -> None:
        """Give the lease up (if still ours): the next run takes it at once."""
        with database_errors(self.url), self.engine.begin() as connection:
            now = database_now(connection)
            connection.execute(
                update(LEASES)
                .where(LEASES.c.job == job, LEASES.c.token == token)
                .values(released_at=now, expires_at=now)
            )

    def all(self) -> tuple[datetime, list[LeaseRow]]:
        """The database's clock, and every job's lease row (read-only)."""
        with database_errors(self.url), self.engine.connect() as connection:
            now = database_now(connection)
            rows = connection.execute(select(LEASES).order_by(LEASES.c.job)).all()
        return now, [_lease(row) for row in rows]


def database_now(connection: Connection) -> datetime:
    """The database server's clock in UTC (this host's for SQLite, a local file)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return _utc(connection.execute(_PG_NOW).scalar_one())
    if dialect in {"mysql", "mariadb"}:
        return _utc(connection.execute(_MYSQL_NOW).scalar_one())
    return datetime.now(UTC)


def _read(connection: Connection, job: str) -> LeaseRow | None:
    row = connection.execute(select(LEASES).where(LEASES.c.job == job)).first()
    return None if row is None else _lease(row)


def _write(connection: Connection, job: str, seen: LeaseRow | None, values: dict[str, Any]) -> bool:
    """Insert the row, or compare-and-set it on the token it was read with; whether it
    is now ours (an insert that loses a race raises IntegrityError)."""
    if seen is None:
        connection.execute(insert(LEASES).values(job=job, **values))
        return True
    done = connection.execute(
        update(LEASES).where(LEASES.c.job == job, LEASES.c.token == seen.token).values(**values)
    )
    return done.rowcount == 1


def _lease(row: Row[Any]) -> LeaseRow:
    released = row.released_at
    return LeaseRow(
        job=str(row.job),
        token=str(row.token),
        host=str(row.host),
        pid=int(row.pid),
        acquired_at=_utc(row.acquired_at),
        renewed_at=_utc(row.renewed_at),
        expires_at=_utc(row.expires_at),
        released_at=None if released is None else _utc(released),
    )


def _utc(value: Any) -> datetime:
    """A timestamp as the driver gives it, in UTC when it has no zone (SQLite, MariaDB)."""
    stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def mechanism(dialect: str, ttl: timedelta) -> str:
    """How cron jobs exclude each other here, in one line (`config show`, `doctor`)."""
    seconds = int(ttl.total_seconds())
    said = (
        f"leases in genbuf_job_leases (renewed every {seconds // RENEWALS_PER_TTL}s, "
        f"taken over {seconds}s after a holder dies); no session state"
    )
    if dialect == "postgresql":
        return said + ", no prepared statements: works behind a transaction-mode pooler"
    if dialect in {"mysql", "mariadb"}:
        return said + ": works behind ProxySQL"
    return said
