"""genbuf db: schema management through the Alembic migrations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.db.check import CheckResult


db_app = typer.Typer(help="Database schema: apply the Alembic migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Apply the migrations to the configured database (as `alembic upgrade head` does).

    Example: genbuf db upgrade
    """
    from genbuffer.db.check import UpgradeResult
    from genbuffer.db.upgrade import upgrade as apply_migrations
    from genbuffer.settings import mask_url

    rt = runtime(ctx, as_json)
    repository = rt.new_repository()  # the one command that creates a SQLite file
    revision = apply_migrations(repository.engine, repository.url)
    result = UpgradeResult(database=mask_url(repository.url), revision=revision)
    emit(
        rt,
        result,
        lambda console: console.print(f"{result.database} is at revision {result.revision}"),
    )


@db_app.command("check")
def check(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Report what the database lacks for genbuf; exit 1 if something required is missing.

    Example: genbuf --env-file /var/www/app/.env db check
    """
    from genbuffer.db.check import CheckResult, check_schema
    from genbuffer.settings import mask_url

    rt = runtime(ctx, as_json)
    repository = rt.repository
    problems = check_schema(repository.engine, repository.url)
    result = CheckResult(
        database=mask_url(repository.url),
        ok=not any(p.severity == "error" for p in problems),
        problems=problems,
    )
    emit(rt, result, lambda console: _render_check(console, result))
    if not result.ok:
        raise typer.Exit(1)


@db_app.command("laravel-migration")
def laravel_migration(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="the app's database/migrations directory (a file name is generated), "
            "or a .php file",
        ),
    ] = Path("database/migrations"),
    as_json: JsonOpt = False,
) -> None:
    """Write a Laravel migration creating the tables and columns `db check` expects.

    For an app that owns its schema: `php artisan migrate` (and `migrate:fresh`) then
    creates genbuf's tables; the migration also records genbuf's migration revision, so
    `genbuf db upgrade` afterwards applies only what later versions add.

    Example: genbuf db laravel-migration --output /var/www/app/database/migrations
    """
    from genbuffer.db.check import MigrationWritten
    from genbuffer.db.laravel import (
        MIGRATION_NAME,
        head_revision,
        migration_filename,
        render_migration,
    )
    from genbuffer.errors import UsageError

    rt = runtime(ctx, as_json)
    path = output if output.suffix == ".php" else output / migration_filename()
    if not path.parent.is_dir():
        raise UsageError(
            f"{path.parent} is not a directory",
            hint="give the app's database/migrations directory with --output",
        )
    if path.exists():
        raise UsageError(f"{path} exists: refusing to overwrite it", hint="remove it first")
    # a second run a second later names another file: Laravel would run both migrations
    earlier = sorted(path.parent.glob(f"*_{MIGRATION_NAME}.php"))
    if earlier and output.suffix != ".php":
        raise UsageError(
            f"{earlier[-1]} exists: refusing to write a second migration of genbuf's tables",
            hint="remove it first to write it again (php artisan migrate would create "
            "the tables twice)",
        )
    revision = head_revision()
    try:
        path.write_text(render_migration(revision), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    result = MigrationWritten(path=str(path), revision=revision)
    emit(rt, result, lambda console: console.print(f"wrote {printable(result.path)}"))


def _render_check(console: Console, result: CheckResult) -> None:
    from rich.table import Table

    if result.problems:
        table = Table("severity")
        # names never cut ("generation_artifact…"): the message wraps first
        table.add_column("table", no_wrap=True, overflow="fold")
        table.add_column("column", no_wrap=True, overflow="fold")
        table.add_column("message", overflow="fold", ratio=1)
        for row in result.problems:
            table.add_row(row.severity, row.table, row.column or "-", printable(row.message))
        console.print(table)
    verdict = (
        "has what genbuf needs" if result.ok else "lacks what genbuf needs: run genbuf db upgrade"
    )
    console.print(f"{result.database} {verdict}")
