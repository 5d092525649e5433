"""genbuf config: the effective configuration and where each value came from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.config_report import ConfigRow, ConfigShow
    from genbuffer.runtime import Runtime


config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print every setting, where it came from (environment, env file, default), secrets masked.

    Example: genbuf --env-file /var/www/app/.env config show
    """
    from genbuffer.config_report import ConfigShow, describe_settings

    rt = runtime(ctx, as_json)
    rows = describe_settings(rt.env_file)
    rows.append(_buffers_row(rt))
    result = ConfigShow(settings=rows, redis=_cluster(rt, rows))
    emit(rt, result, lambda console: _render(console, result))


def _buffers_row(rt: Runtime) -> ConfigRow:
    """Where buffers were found in Redis: under the prefix, elsewhere, or not looked."""
    from genbuffer.config_report import ConfigRow
    from genbuffer.errors import GenbufferError
    from genbuffer.prefixes import prefix_report

    name = "buffers found"
    if not rt.settings.redis_configured():
        _prefix_note(rt)
        return ConfigRow(name=name, value=None, source="not checked: Redis is not configured")
    try:
        report = prefix_report(rt.buffer)
    except GenbufferError as error:
        _prefix_note(rt)
        return ConfigRow(name=name, value=None, source=f"not checked: {error.message}")
    if report.buffers_here:
        return ConfigRow(name=name, value="under the effective prefix", source="redis scan")
    _prefix_note(rt)
    if not report.elsewhere:
        return ConfigRow(name=name, value="none yet, under any prefix", source="redis scan")
    where = ", ".join(f"{p!r}: {n} keys" for p, n in sorted(report.elsewhere.items())[:5])
    rt.warn(f"no buffer under the effective prefix, but under {where}: set REDIS_PREFIX")
    return ConfigRow(name=name, value=f"only under other prefixes: {where}", source="redis scan")


def _prefix_note(rt: Runtime) -> None:
    """APP_NAME without REDIS_PREFIX, said once, when no buffer confirms the prefix."""
    if note := rt.settings.prefix_warning():
        rt.warn(note)


def _cluster(rt: Runtime, rows: list[ConfigRow]) -> dict[str, object] | None:
    """The cluster's shape (primaries, replicas, slots) when REDIS_CLUSTER_NODES is set;
    also a row of the table."""
    from genbuffer.config_report import ConfigRow
    from genbuffer.errors import GenbufferError

    if not rt.settings.redis_cluster_nodes:
        return None
    try:
        shape = rt.buffer.keyspace.cluster_shape()
    except GenbufferError as error:
        rows.append(
            ConfigRow(name="redis cluster", value=None, source=f"not read: {error.message}")
        )
        return None
    if shape is None:
        return None
    rows.append(ConfigRow(name="redis cluster", value=shape.summary(), source="CLUSTER SLOTS"))
    return {
        "cluster": {
            "state": shape.state,
            "primaries": len(shape.primaries),
            "replicas": shape.replicas,
            "slots_covered": shape.slots_covered,
            "nodes": {name: vars(primary) for name, primary in shape.primaries.items()},
        }
    }


def _render(console: Console, result: ConfigShow) -> None:
    from rich.table import Table

    table = Table()
    # names never cut ("GENERATION_CHUNK_MAX_L…"): the other columns give way first
    table.add_column("setting", no_wrap=True, overflow="fold")
    table.add_column("value", overflow="fold", ratio=1)  # long URLs fold at 80 columns
    table.add_column("source", overflow="fold")
    for row in result.settings:
        table.add_row(row.name, printable(row.value), printable(row.source))
    console.print(table)
