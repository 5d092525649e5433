"""genbuf db: schema management through the Alembic migrations."""

from __future__ import annotations

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit
from genbuffer.db import migrate
from genbuffer.db.check import check_schema
from genbuffer.settings import mask_url

db_app = typer.Typer(help="Database schema: apply the Alembic migrations.", no_args_is_help=True)


class UpgradeResult(BaseModel):
    """What `db upgrade --json` prints."""

    database: str
    revision: str | None


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Apply the migrations to the configured database (as `alembic upgrade head` does).

    Example: genbuf db upgrade
    """
    rt = runtime(ctx, as_json)
    repository = rt.repository
    revision = migrate.upgrade(repository.engine, repository.url)
    result = UpgradeResult(database=mask_url(repository.url), revision=revision)
    emit(
        result,
        as_json,
        lambda console: console.print(f"{result.database} is at revision {result.revision}"),
    )


class CheckRow(BaseModel):
    """One difference: table, column, severity (error, warning, note), message."""

    table: str
    column: str | None
    severity: str
    message: str


class CheckResult(BaseModel):
    """What `db check --json` prints."""

    database: str
    ok: bool
    problems: list[CheckRow]


@db_app.command("check")
def check(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Report what the database lacks for genbuf; exit 1 if something required is missing.

    Example: genbuf --env-file /var/www/app/.env db check
    """
    rt = runtime(ctx, as_json)
    repository = rt.repository
    problems = [CheckRow(**vars(p)) for p in check_schema(repository.engine, repository.url)]
    result = CheckResult(
        database=mask_url(repository.url),
        ok=not any(p.severity == "error" for p in problems),
        problems=problems,
    )
    emit(result, as_json, lambda console: _render_check(console, result))
    if not result.ok:
        raise typer.Exit(1)


def _render_check(console: Console, result: CheckResult) -> None:
    if result.problems:
        table = Table("severity", "table", "column", "message")
        for row in result.problems:
            table.add_row(row.severity, row.table, row.column or "-", escape(row.message))
        console.print(table)
    verdict = (
        "has what genbuf needs" if result.ok else "lacks what genbuf needs: run genbuf db upgrade"
    )
    console.print(f"{result.database} {verdict}")
