"""The `genbuf` Typer app: builds the app and registers one module per command.

The error boundary is ``GenbufGroup.invoke``: a GenbufferError raised anywhere
below becomes ``error: …`` (and ``hint: …``) on stderr and its exit code;
never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from typer.core import TyperGroup

from genbuffer import __version__
from genbuffer.cli._output import error_document, report_error, stderr, write_json
from genbuffer.errors import GenbufferError
from genbuffer.runtime import Runtime

__all__ = ["app", "main"]


class GenbufGroup(TyperGroup):
    """The root group: the one place expected failures become exit codes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Note whether --json was asked for, so a usage error can answer in JSON too,
        and which root options the root's own arguments give."""
        ctx.meta["genbuf.json"] = "--json" in args
        root = _root_args(args)
        # None: the root's help, or no command (all the root options are shown)
        ctx.meta["genbuf.root_options"] = root.options if root.command is not None else None
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


class _RootArgs(NamedTuple):
    """What a command line says before its command."""

    options: set[str]  # root options given (``--name=value`` as ``--name``)
    command: str | None  # the command named, unless the root's help comes first


def _root_args(args: list[str]) -> _RootArgs:
    """Read the root's part of ``args``: its options, then the command (or --help)."""
    given: set[str] = set()
    values = iter(args)
    for arg in values:
        if not arg.startswith("-"):
            return _RootArgs(given, arg)  # what follows is the command's own
        if arg in {"--help", "-h"}:
            return _RootArgs(given, None)
        given.add(arg.split("=", 1)[0])
        if arg in _ROOT_OPTIONS_WITH_A_VALUE:
            next(values, None)
    return _RootArgs(given, None)


def _new_app() -> typer.Typer:
    """The root Typer app with its options, before any command is registered."""
    built = typer.Typer(
        cls=GenbufGroup,
        name="genbuf",
        help="Buffer LLM generation chunks in Redis and compact them into the database.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
        pretty_exceptions_enable=False,  # an unexpected error prints a plain traceback
        rich_markup_mode=None,
    )
    built.callback()(root)
    return built


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genbuf {__version__}")
        raise typer.Exit()


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


# Every command by name: the module and function (or sub-app: db, config) that is it.
COMMANDS: dict[str, tuple[str, str]] = {
    "compact-generation": ("genbuffer.cli.compact", "compact_generation"),
    "inspect-generation": ("genbuffer.cli.inspect_cmd", "inspect_generation_cmd"),
    "emit-validation-test": ("genbuffer.cli.emit_cmd", "emit_validation_test_cmd"),
    "test-redis-buffer": ("genbuffer.cli.smoke_cmd", "test_redis_buffer"),
    "migrate-compacted-from-metadata": ("genbuffer.cli.migrate_cmd", "migrate_compacted_cmd"),
    "purge-chunks": ("genbuffer.cli.purge_cmd", "purge_chunks_cmd"),
    "compact-pending": ("genbuffer.cli.pending_cmd", "compact_pending_cmd"),
    "push": ("genbuffer.cli.push_cmd", "push_cmd"),
    "status": ("genbuffer.cli.status_cmd", "status_cmd"),
    "metrics": ("genbuffer.cli.metrics_cmd", "metrics_cmd"),
    "doctor": ("genbuffer.cli.doctor_cmd", "doctor_cmd"),
    "validation-report": ("genbuffer.cli.report_cmd", "validation_report_cmd"),
    "show-generation": ("genbuffer.cli.show_cmd", "show_generation_cmd"),
    "tail": ("genbuffer.cli.tail_cmd", "tail_cmd"),
    "worker": ("genbuffer.cli.worker_cmd", "worker_cmd"),
    "offload-compacted": ("genbuffer.cli.objects_cmd", "offload_compacted_cmd"),
    "purge-objects": ("genbuffer.cli.objects_cmd", "purge_objects_cmd"),
    "db": ("genbuffer.cli.db_cmd", "db_app"),
    "config": ("genbuffer.cli.config_cmd", "config_app"),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The genbuf app with every command, or with only the command ``only``.

    Typer builds the parameters of every registered command on each run; a run
    that names its command imports and builds that one only (the root's help,
    shell completion and an unknown name get them all).
    """
    built = _new_app()
    for name, (module, attribute) in COMMANDS.items():
        if only is not None and name != only:
            continue
        command = getattr(import_module(module), attribute)
        if isinstance(command, typer.Typer):
            built.add_typer(command, name=name)
        else:
            built.command(name)(command)
    return built


def __getattr__(name: str) -> typer.Typer:
    """``app``, the Typer app with every command, built on first use (PEP 562): a run
    of one command imports that command's module only."""
    if name == "app":
        built = build_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _invoked_command(args: list[str]) -> str | None:
    """The command ``args`` name, if it is one of genbuf's and nothing asks for every
    command (the root's help, shell completion)."""
    if "_GENBUF_COMPLETE" in os.environ:  # typer's shell completion
        return None
    command = _root_args(args).command
    return command if command in COMMANDS else None


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
        build_app(_invoked_command(sys.argv[1:]))()
    except BrokenPipeError:
        # the reader left: point stdout at /dev/null so that the interpreter's final
        # flush does not fail again, and exit like a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
