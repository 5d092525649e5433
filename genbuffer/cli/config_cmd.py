"""genbuf config: the effective configuration and where each value came from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.settings import ConfigShow


config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print every setting, where it came from (environment, env file, default), secrets masked.

    Example: genbuf --env-file /var/www/app/.env config show
    """
    from genbuffer.settings import ConfigRow, ConfigShow, describe_settings

    rt = runtime(ctx, as_json)
    rows = [ConfigRow(**vars(row)) for row in describe_settings(rt.env_file)]
    result = ConfigShow(settings=rows)
    emit(result, as_json, lambda console: _render(console, result))


def _render(console: Console, result: ConfigShow) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("setting", "value", "source")
    for row in result.settings:
        table.add_row(row.name, escape("-" if row.value is None else row.value), escape(row.source))
    console.print(table)
