"""What the database says about the system: the compaction ledger, cron job runs,
validation issues and generations that never got an artifact. Read-only but for
``record_job_run``; every query is bounded (an index, an id range, or a count)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select

from genbuffer.db.engine import database_errors
from genbuffer.db.rows import GEN, ISSUES, LEDGER, RUNS
from genbuffer.keys import MAX_ID
from genbuffer.states import LedgerResult

__all__ = ["IssueRow", "Observations"]

LOST_PAGE = 1000  # rows without an artifact read per query
# psycopg's own placeholder (exec_driver_sql): the ids as one array parameter. No cast:
# psycopg sends the narrowest integer array that holds them, and a cast of that array
# to bigint[] made the planner scan the table instead of the primary key (30x slower)
_ORGANIZATIONS_OF = "SELECT id, organization_id FROM scenario_generations WHERE id = ANY(%(ids)s)"
IssueRow = tuple[int, str, list[dict[str, Any]], datetime]  # generation_id, mode, errors, at


class Observations:
    """Counts and times read from genbuffer's tables in one database."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    def now(self) -> datetime:
        """The database server's clock (doctor compares it with this host's)."""
        with database_errors(self.url), self.engine.connect() as connection:
            value = connection.execute(select(func.now())).scalar_one()
        return _aware(value)

    def record_job_run(
        self,
        job: str,
        *,
        ok: bool,
        started_at: datetime,
        finished_at: datetime,
        summary: dict[str, Any],
    ) -> None:
        """Note one run of a cron job (compact-pending, purge-chunks)."""
        with database_errors(self.url), self.engine.begin() as connection:
            connection.execute(
                insert(RUNS).values(
                    job=job,
                    ok=ok,
                    started_at=started_at,
                    finished_at=finished_at,
                    summary=summary,
                )
            )

    def last_runs(self, jobs: tuple[str, ...]) -> dict[str, tuple[datetime | None, bool | None]]:
        """Each job's last successful run, and whether its very last run succeeded."""
        found: dict[str, tuple[datetime | None, bool | None]] = {}
        with database_errors(self.url), self.engine.connect() as connection:
            for job in jobs:
                success = connection.execute(
                    select(func.max(RUNS.c.finished_at)).where(RUNS.c.job == job, RUNS.c.ok)
                ).scalar_one()
                last = connection.execute(
                    select(RUNS.c.ok)
                    .where(RUNS.c.job == job)
                    .order_by(RUNS.c.finished_at.desc(), RUNS.c.id.desc())
                    .limit(1)
                ).scalar_one_or_none()
                found[job] = (None if success is None else _aware(success), last)
        return found

    def compactions(self, since: datetime | None = None) -> dict[str, int]:
        """Ledger rows by result (`persisted`, `strict_abort`, `failed`), all time or since."""
        query = select(LEDGER.c.result, func.count()).group_by(LEDGER.c.result)
        if since is not None:
            query = query.where(LEDGER.c.created_at >= since)
        with database_errors(self.url), self.engine.connect() as connection:
            return {str(result): int(count) for result, count in connection.execute(query)}

    def late_chunks(self, since: datetime) -> dict[str, dict[str, int]]:
        """New streams that met an artifact since: by outcome (appended, replaced), then
        by rule (finished, json_continues, json_new_document, late_chunks_setting)."""
        query = (
            select(LEDGER.c.late_chunks, LEDGER.c.late_rule, func.count())
            .where(LEDGER.c.created_at >= since, LEDGER.c.late_chunks.is_not(None))
            .group_by(LEDGER.c.late_chunks, LEDGER.c.late_rule)
        )
        found: dict[str, dict[str, int]] = {}
        with database_errors(self.url), self.engine.connect() as connection:
            for outcome, rule, count in connection.execute(query):
                found.setdefault(str(outcome), {})[str(rule)] = int(count)
        return found

    def strict_would_abort(self, since: datetime) -> tuple[int, int]:
        """(soft compactions persisted since, those with error issues: strict would abort)."""
        soft = and_(
            LEDGER.c.created_at >= since,
            LEDGER.c.result == LedgerResult.PERSISTED,
            LEDGER.c.mode == "soft",
        )
        with database_errors(self.url), self.engine.connect() as connection:
            total = connection.execute(select(func.count()).where(soft)).scalar_one()
            aborting = connection.execute(
                select(func.count()).where(soft, LEDGER.c.errors > 0)
            ).scalar_one()
        return int(total), int(aborting)

    def lag_percentiles(self, since: datetime, points: tuple[float, ...]) -> dict[float, float]:
        """Compaction lag (last chunk to compaction, seconds) at each percentile point.

        Portable: a count, then one ORDER BY … OFFSET per point on the ledger's rows
        since ``since`` (nearest rank). Empty when no row has a lag."""
        known = and_(LEDGER.c.created_at >= since, LEDGER.c.lag_seconds.is_not(None))
        found: dict[float, float] = {}
        with database_errors(self.url), self.engine.connect() as connection:
            count = int(connection.execute(select(func.count()).where(known)).scalar_one())
            for point in points if count else ():
                rank = min(count - 1, max(0, int(point * count + 0.5) - 1))
                value = connection.execute(
                    select(LEDGER.c.lag_seconds)
                    .where(known)
                    .order_by(LEDGER.c.lag_seconds)
                    .offset(rank)
                    .limit(1)
                ).scalar_one()
                found[point] = float(value)
        return found

    def over_length(self, max_len: int) -> int:
        """Compactions of more chunks than GENERATION_CHUNK_MAX_LEN, all time."""
        query = select(func.count()).where(
            LEDGER.c.result == LedgerResult.PERSISTED, LEDGER.c.chunk_count > max_len
        )
        with database_errors(self.url), self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def issues(self, since: datetime | None = None, page: int = 1000) -> Iterator[IssueRow]:
        """Validation issue rows (all time, or since), streamed a page at a time."""
        query = select(ISSUES.c.generation_id, ISSUES.c.mode, ISSUES.c.errors, ISSUES.c.created_at)
        if since is not None:
            query = query.where(ISSUES.c.created_at >= since)
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execution_options(yield_per=page).execute(query)
            for gen, mode, errors, created_at in rows:
                yield (
                    int(gen),
                    str(mode),
                    errors if isinstance(errors, list) else [],
                    _aware(created_at),
                )

    def organizations_of(self, generation_ids: list[int]) -> dict[int, int]:
        """The organization of each of these generations that has a row.

        PostgreSQL gets the ids as one array parameter (= ANY): an IN list of a
        thousand placeholders costs ten times as much to send and plan. An id past the
        bigint column's range (a key's 19 digits allow it) has no row: it is not asked
        (SQLite refuses it, and PostgreSQL would compare numerics, off the primary key)."""
        generation_ids = [gen for gen in generation_ids if 0 < gen <= MAX_ID]
        if not generation_ids:
            return {}
        with database_errors(self.url), self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                rows = connection.exec_driver_sql(_ORGANIZATIONS_OF, {"ids": generation_ids})
            else:
                rows = connection.execute(
                    select(GEN.c.id, GEN.c.organization_id).where(GEN.c.id.in_(generation_ids))
                )
            return {int(gen): int(org) for gen, org in rows}

    def compactions_per_minute(self, minutes: int, now: datetime) -> list[int]:
        """Compactions persisted in each of the last ``minutes`` minutes, oldest first
        (one indexed count per minute: portable, and bounded whatever the rate)."""
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
        counts: list[int] = []
        with database_errors(self.url), self.engine.connect() as connection:
            for step in range(minutes):
                low = start + timedelta(minutes=step)
                query = select(func.count()).where(
                    LEDGER.c.result == LedgerResult.PERSISTED,
                    LEDGER.c.created_at >= low,
                    LEDGER.c.created_at < low + timedelta(minutes=1),
                )
                counts.append(int(connection.execute(query).scalar_one()))
        return counts

    def issues_of(self, generation_id: int) -> list[dict[str, Any]]:
        """One generation's validation issue rows, oldest first."""
        query = select(ISSUES).where(ISSUES.c.generation_id == generation_id).order_by(ISSUES.c.id)
        with database_errors(self.url), self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def without_artifact(
        self, created_before: datetime, page: int = LOST_PAGE
    ) -> Iterator[list[tuple[int, int, int | None]]]:
        """Rows with no artifact (nor a legacy blob to move) created before the cutoff,
        as pages of (id, organization_id, scenario_id), by id."""
        after = 0
        base = (
            select(GEN.c.id, GEN.c.organization_id, GEN.c.scenario_id)
            .where(
                GEN.c.compacted.is_(None),
                GEN.c.created_at < created_before,
                GEN.c.metadata["compacted"].as_string().is_(None),
            )
            .order_by(GEN.c.id)
            .limit(page)
        )
        while True:
            with database_errors(self.url), self.engine.connect() as connection:
                rows = [
                    (int(i), int(org), None if scenario is None else int(scenario))
                    for i, org, scenario in connection.execute(base.where(GEN.c.id > after))
                ]
            if not rows:
                return
            yield rows
            after = rows[-1][0]


def _aware(value: Any) -> datetime:
    """A timestamp as the driver gives it, in UTC when it has no zone (SQLite, MariaDB)."""
    stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
