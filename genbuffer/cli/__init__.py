"""The `genbuf` Typer app: builds the app and registers one module per command.

The error boundary is ``GenbufGroup.invoke``: a GenbufferError raised anywhere
below becomes ``error: …`` (and ``hint: …``) on stderr and its exit code;
never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from genbuffer import __version__
from genbuffer.cli._output import error_document, report_error, stderr, write_json
from genbuffer.cli.compact import compact_generation
from genbuffer.cli.config_cmd import config_app
from genbuffer.cli.db_cmd import db_app
from genbuffer.cli.emit_cmd import emit_validation_test_cmd
from genbuffer.cli.inspect_cmd import inspect_generation_cmd
from genbuffer.cli.migrate_cmd import migrate_compacted_cmd
from genbuffer.cli.pending_cmd import compact_pending_cmd
from genbuffer.cli.purge_cmd import purge_chunks_cmd
from genbuffer.cli.push_cmd import push_cmd
from genbuffer.cli.smoke_cmd import test_redis_buffer
from genbuffer.errors import GenbufferError
from genbuffer.runtime import Runtime

__all__ = ["app", "main"]


class GenbufGroup(TyperGroup):
    """The root group: the one place expected failures become exit codes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Note whether --json was asked for, so a usage error can answer in JSON too,
        and which root options the root's own arguments give."""
        ctx.meta["genbuf.json"] = "--json" in args
        ctx.meta["genbuf.root_options"] = _root_options(args)
        return super().parse_args(ctx, args)

    def get_params(self, ctx: Any) -> Any:
        """The root options that were given, or all of them for the root's help.

        Typer coerces every root option through pydantic even when it is absent
        (its --help and completion flags included), so processing them all would
        load pydantic for `genbuf CMD --help`. An absent option keeps its default
        (GENBUF_ENV_FILE, --env-file's variable, is then read by the Runtime).
        """
        params = super().get_params(ctx)
        given = ctx.meta.get("genbuf.root_options")
        if given is None:  # the root's help, or no command: all of them
            return params
        return [param for param in params if given & {*param.opts, *param.secondary_opts}]

    def invoke(self, ctx: Any) -> Any:
        """Run the command; turn a GenbufferError into its message and exit code."""
        try:
            return super().invoke(ctx)
        except typer.TyperException as error:
            # typer's usage errors (exit code 2): with --json, stdout still gets its one
            # JSON document; typer then prints its usage message on stderr as always
            if ctx.meta.get("genbuf.json") and getattr(error, "exit_code", 1) == 2:
                hint = "see the command's --help"
                write_json(error_document("UsageError", error.format_message(), hint, 2))
            raise
        except GenbufferError as error:
            runtime = ctx.obj if isinstance(ctx.obj, Runtime) else None
            report_error(error, as_json=bool(runtime and runtime.json_output))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(130) from None


_ROOT_OPTIONS_WITH_A_VALUE = {"--env-file"}


def _root_options(args: list[str]) -> set[str] | None:
    """The options given before the command (``--name=value`` as ``--name``); None when
    the root's help is asked for or no command follows."""
    given: set[str] = set()
    values = iter(args)
    for arg in values:
        if not arg.startswith("-"):
            return given  # the command: what follows is its own
        if arg in {"--help", "-h"}:
            return None
        given.add(arg.split("=", 1)[0])
        if arg in _ROOT_OPTIONS_WITH_A_VALUE:
            next(values, None)
    return None


app = typer.Typer(
    cls=GenbufGroup,
    name="genbuf",
    help="Buffer LLM generation chunks in Redis and compact them into the database.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,  # an unexpected error prints a plain traceback, no locals
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genbuf {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            envvar="GENBUF_ENV_FILE",
            help="Read settings from this env file (a Laravel .env works as it is).",
            dir_okay=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more on stderr.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """genbuf: operations on genbuffer's Redis buffers and database."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s: %(message)s",
        force=True,
    )
    # psycopg warns once per pipeline it abandons on a dead connection ("error ignored
    # terminating <psycopg.Pipeline [BAD]>"): the one error line below already says it
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    ctx.obj = Runtime(env_file)  # settings load on first use, inside the error boundary


app.command("compact-generation")(compact_generation)
app.command("inspect-generation")(inspect_generation_cmd)
app.command("emit-validation-test")(emit_validation_test_cmd)
app.command("test-redis-buffer")(test_redis_buffer)
app.command("migrate-compacted-from-metadata")(migrate_compacted_cmd)
app.command("purge-chunks")(purge_chunks_cmd)
app.command("compact-pending")(compact_pending_cmd)
app.command("push")(push_cmd)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")


def main() -> None:
    """Console-script entry point.

    A closed stdout (`genbuf … >&-`) is a usage error, said before anything runs; a
    reader that goes away mid-output (`genbuf … | head -1`) ends the command quietly.
    """
    if sys.stdout is None:
        if sys.stderr is not None:
            sys.stderr.write("error: stdout is closed: nowhere to print the result\n")
        raise SystemExit(2)
    try:
        app()
    except BrokenPipeError:
        # the reader left: point stdout at /dev/null so that the interpreter's final
        # flush does not fail again, and exit like a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
