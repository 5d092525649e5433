"""genbuf db: schema management through the Alembic migrations."""

from __future__ import annotations

import typer
from pydantic import BaseModel

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit
from genbuffer.db import migrate
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
