"""Repository: one database, its transactions and the reads of a generation's rows.

The SQL lives by job: ``transaction`` (a compaction's statements under its row
lock), ``leases`` (cron job leases), ``retention`` (the backup purge), ``legacy`` (the
`metadata.compacted` move) and ``artifact`` (writing the artifact's columns).
Every call maps driver failures to genbuffer errors (``engine.database_errors``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert, select

from genbuffer.db.engine import database_errors, make_engine
from genbuffer.db.rows import (
    CHUNKS,
    GEN,
    HISTORY,
    ISSUES,
    ROW_COLUMNS,
    GenerationRow,
    new_id,
    to_row,
)
from genbuffer.db.transaction import Transaction
from genbuffer.errors import DatabaseUnavailable
from genbuffer.settings import Settings

if TYPE_CHECKING:
    from genbuffer.db.leases import JobLeases
    from genbuffer.db.legacy import LegacyBlobs
    from genbuffer.db.observations import Observations
    from genbuffer.db.retention import Retention

__all__ = ["GenerationRow", "Repository", "Transaction"]


class Repository:
    """Transactions and maintenance queries against one database."""

    def __init__(
        self, engine: Engine, url: str, *, lease_ttl: timedelta = timedelta(seconds=60)
    ) -> None:
        self.engine = engine
        self.url = url
        self.lease_ttl = lease_ttl  # JOB_LEASE_TTL

    @cached_property
    def retention(self) -> Retention:
        """The backup purge's queries (loaded by the commands that purge)."""
        from genbuffer.db.retention import Retention  # noqa: PLC0415

        return Retention(self.engine, self.url)

    @cached_property
    def observations(self) -> Observations:
        """What the database says about the system (status, doctor, metrics, reports)."""
        from genbuffer.db.observations import Observations  # noqa: PLC0415

        return Observations(self.engine, self.url)

    @cached_property
    def leases(self) -> JobLeases:
        """The cron jobs' lease rows (genbuffer.operations.exclusion holds them)."""
        from genbuffer.db.leases import JobLeases  # noqa: PLC0415

        return JobLeases(self.engine, self.url, self.lease_ttl)

    @cached_property
    def legacy(self) -> LegacyBlobs:
        """The legacy-blob move's queries (loaded by the command that moves them)."""
        from genbuffer.db.legacy import LegacyBlobs  # noqa: PLC0415

        return LegacyBlobs(self.engine, self.url)

    @property
    def dialect(self) -> str:
        """The database's SQLAlchemy dialect name (postgresql, sqlite, mysql, mariadb)."""
        return self.engine.dialect.name

    @classmethod
    def from_settings(cls, settings: Settings) -> Repository:
        """Open the configured database (nothing connects until the first query)."""
        url = settings.effective_database_url()
        return cls(make_engine(url), url, lease_ttl=timedelta(seconds=settings.job_lease_ttl))

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A COMMIT whose reply is lost (the connection died) is an outage unless the
        block registered a check (``Transaction.verify_commit_with``) that finds,
        on a fresh connection, that it was applied.
        """
        tx: Transaction | None = None
        try:
            with database_errors(self.url), self.engine.begin() as connection:
                tx = Transaction(connection)
                yield tx
        except DatabaseUnavailable:
            if tx is None or tx.commit_check is None or not tx.commit_check():
                raise

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        with database_errors(self.url), self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def warm(self, connections: int) -> None:
        """Open ``connections`` pooled connections now rather than at the first queries:
        a long-running worker pays its set-up before it takes work (each costs the server
        a backend process: ~30 ms on a busy machine, and the first look at the rows'
        table; the row lock's statements compiled once)."""
        with database_errors(self.url), ExitStack() as held:
            for _ in range(connections):
                connection = held.enter_context(self.engine.connect())
                Transaction(connection).lock_generations([0])  # no row 0: nothing locked
                connection.rollback()

    def get_generation(self, generation_id: int) -> GenerationRow | None:
        """Read one generation row without locking it."""
        with database_errors(self.url), self.engine.connect() as connection:
            found = connection.execute(
                select(*ROW_COLUMNS).where(GEN.c.id == generation_id)
            ).first()
        return None if found is None else to_row(found)

    def create_generation(
        self,
        organization_id: int,
        scenario_id: int | None = None,
        metadata: Any = None,
        generation_id: int | None = None,
    ) -> int:
        """Insert a generation row (the producer app's job; used by demos and smoke tests)."""
        values: dict[str, Any] = {
            "organization_id": organization_id,
            "scenario_id": scenario_id,
            "metadata": {} if metadata is None else metadata,
        }
        if generation_id is not None:
            values["id"] = generation_id
        with self.transaction() as tx:
            result = tx.connection.execute(insert(GEN).values(**values))
            return new_id(result)

    def issue(self, issue_id: int) -> dict[str, Any] | None:
        """One `metadata_validation_issues` row as a dict."""
        with database_errors(self.url), self.engine.connect() as connection:
            found = connection.execute(select(ISSUES).where(ISSUES.c.id == issue_id)).first()
        return None if found is None else dict(found._mapping)

    def history(self, generation_id: int) -> list[dict[str, Any]]:
        """The generation's replaced artifacts, oldest first."""
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execute(
                select(HISTORY)
                .where(HISTORY.c.generation_id == generation_id)
                .order_by(HISTORY.c.id)
            )
            return [dict(row._mapping) for row in rows]

    def backups(self, generation_id: int) -> list[bytes]:
        """The backed-up chunks of a generation, in order."""
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execute(
                select(CHUNKS.c.content)
                .where(CHUNKS.c.generation_id == generation_id)
                .order_by(CHUNKS.c.seq)
            )
            return [bytes(row[0]) for row in rows]

    def save_many(self, updates: dict[int, dict[str, Any]]) -> None:
        """Apply per-row column updates in one transaction."""
        with self.transaction() as tx:
            for row_id, values in updates.items():
                tx.update_generation(row_id, values)
