"""The `genbuf` Typer app: the root options, and every command loaded when it is used.

Commands load lazily the way Click documents it ("Lazily Loading Subcommands"): the
root group's ``lazy_subcommands`` maps each name to the module attribute that is the
command, and ``list_commands``/``get_command`` are the only hooks. ``genbuf --help``
lists every command from ``SUMMARIES`` (each command's first help paragraph, checked
against the real help by tests/test_cli.py) without importing one.

The error boundary is ``GenbufGroup.invoke``: a GenbufferError raised anywhere
below becomes ``error: …`` (and ``hint: …``) on stderr and its exit code;
never a traceback. Click's usage errors (exit 2) are said the same way, with a hint
naming the command's ``--help``, rather than as Click's usage block.
"""

from __future__ import annotations

import logging
import os
import sys
from difflib import get_close_matches
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from genbuffer import __version__
from genbuffer.cli._output import report_error, stderr
from genbuffer.errors import GenbufferError, UsageError
from genbuffer.runtime import Runtime

__all__ = ["COMMANDS", "SUMMARIES", "LazyGroup", "app", "command_group", "main"]

# Every command by name: "module:attribute", a command function or a Typer sub-app (db,
# config), in the order `genbuf --help` lists them.
COMMANDS: dict[str, str] = {
    "compact-generation": "genbuffer.cli.compact_generation_cmd:compact_generation",
    "inspect-generation": "genbuffer.cli.inspect_generation_cmd:inspect_generation_cmd",
    "emit-validation-test": "genbuffer.cli.emit_validation_test_cmd:emit_validation_test_cmd",
    "test-redis-buffer": "genbuffer.cli.test_redis_buffer_cmd:test_redis_buffer",
    "migrate-compacted-from-metadata": "genbuffer.cli.migrate_compacted_cmd:migrate_compacted_cmd",
    "purge-chunks": "genbuffer.cli.purge_chunks_cmd:purge_chunks_cmd",
    "compact-pending": "genbuffer.cli.compact_pending_cmd:compact_pending_cmd",
    "push": "genbuffer.cli.push_cmd:push_cmd",
    "status": "genbuffer.cli.status_cmd:status_cmd",
    "metrics": "genbuffer.cli.metrics_cmd:metrics_cmd",
    "doctor": "genbuffer.cli.doctor_cmd:doctor_cmd",
    "validation-report": "genbuffer.cli.validation_report_cmd:validation_report_cmd",
    "show-generation": "genbuffer.cli.show_generation_cmd:show_generation_cmd",
    "tail": "genbuffer.cli.tail_cmd:tail_cmd",
    "worker": "genbuffer.cli.worker_cmd:worker_cmd",
    "offload-compacted": "genbuffer.cli.objects_cmd:offload_compacted_cmd",
    "purge-objects": "genbuffer.cli.objects_cmd:purge_objects_cmd",
    "db": "genbuffer.cli.db_cmd:db_app",
    "config": "genbuffer.cli.config_cmd:config_app",
}

# Each command's first help paragraph, on one line: what `genbuf --help` shortens into
# its list (tests/test_cli.py checks each against the command's real help).
SUMMARIES: dict[str, str] = {
    "compact-generation": (
        "Assemble a generation's Redis chunks and persist them into scenario_generations."
    ),
    "inspect-generation": "List a generation's Redis keys with type, length, TTL and memory.",
    "emit-validation-test": (
        "Write one synthetic validation issue (JSONL line and DB row) and print its id."
    ),
    "test-redis-buffer": (
        "Push, read back and clean up a throw-away buffer; exit 1 if any check fails."
    ),
    "migrate-compacted-from-metadata": (
        "Move each metadata.compacted blob into scenario_generations.compacted."
    ),
    "purge-chunks": (
        "Delete chunk backups older than the retention age, of compacted generations only."
    ),
    "compact-pending": (
        "Compact every finished buffer (and idle ones with --idle), deleting each after commit."
    ),
    "push": "Push stdin into the buffer, one chunk a line with its newline kept.",
    "status": (
        "Every buffer under the prefix by state, with what is at risk and the database's counts."
    ),
    "metrics": (
        "Prometheus metrics: buffers by state, at risk, lost, and counters from the database."
    ),
    "doctor": (
        "Check the set-up: Redis (reachable, eviction policy, persistence, prefix), the "
        "database (reachable, schema, cron jobs' last success), the offload object store (it "
        "answers a listing), the audit log and clocks."
    ),
    "validation-report": (
        "Validation issues by code and severity, per day, and how many of the period's soft "
        "compactions strict mode would have aborted (ask before "
        "METADATA_VALIDATION_STRICT=true)."
    ),
    "show-generation": (
        "The artifact's bytes exactly as pushed (stdout, or --output), verified against the "
        "sha256 compaction recorded; a mismatch prints nothing and exits 1."
    ),
    "tail": "Print a buffer's chunks byte for byte, in push order (read-only).",
    "worker": "Compact finished buffers as producers announce them; many workers run at once.",
    "offload-compacted": (
        "Move existing large base64 artifacts from their rows to the object store."
    ),
    "purge-objects": (
        "Delete the objects no row points at: uploads whose compaction never committed."
    ),
    "db": "Database schema: apply the Alembic migrations.",
    "config": "Show the effective configuration.",
}


def command_group(command: Any, name: str) -> typer.Typer:
    """A Typer app holding the one command (a function, or a Typer sub-app) as ``name``,
    registered as the root registers it: with the root's rendering (no rich markup)."""
    holder = typer.Typer(
        add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
    )
    holder.callback()(_holder)
    if isinstance(command, typer.Typer):
        holder.add_typer(command, name=name)
    else:
        holder.command(name)(command)
    return holder


def _holder() -> None:
    """Holds one command (a group of one, so that a sub-app stays a group)."""


class LazyGroup(TyperGroup):
    """A group whose sub-commands are imported when one is used (Click's LazyGroup)."""

    # {command name: "module:attribute"}, set by a subclass
    lazy_subcommands: ClassVar[dict[str, str]] = {}
    # {command name: its first help paragraph}, listed by --help without importing it
    lazy_summaries: ClassVar[dict[str, str]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        """The group's own commands, then the lazy ones."""
        return [*super().list_commands(ctx), *self.lazy_subcommands]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command ``cmd_name``, imported on first use; while the group's --help lists
        the commands, a stand-in holding only its summary."""
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        if ctx.meta.get(_LISTING) is self and cmd_name in self.lazy_summaries:
            return TyperCommand(name=cmd_name, help=self.lazy_summaries[cmd_name])
        return self._lazy_load(cmd_name)

    def _lazy_load(self, cmd_name: str) -> Any:
        module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
        loaded = getattr(import_module(module_name), attribute)
        holder = typer.main.get_command(command_group(loaded, cmd_name))
        return holder.commands[cmd_name]  # type: ignore[attr-defined]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """List the commands from their summaries (nothing imported)."""
        ctx.meta[_LISTING] = self
        try:
            super().format_commands(ctx, formatter)
        finally:
            del ctx.meta[_LISTING]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """As typer's, suggesting the lazy commands too for a mistyped name."""
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as error:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if (
                error.message.startswith("No such command")
                and matches
                and "Did you mean" not in error.message
            ):
                suggestions = ", ".join(f"{match!r}" for match in matches)
                error.message = f"{error.message.rstrip('.')}. Did you mean {suggestions}?"
            raise


_LISTING = "genbuffer.cli.listing"  # ctx.meta: the group whose --help lists its commands


class GenbufGroup(LazyGroup):
    """The root group: genbuf's commands, and the one place expected failures become
    exit codes."""

    lazy_subcommands = COMMANDS
    lazy_summaries = SUMMARIES

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Note whether --json was asked for, so a usage error can answer in JSON too; a
        usage error in the root's own options is said as any other."""
        ctx.meta["genbuf.json"] = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as error:
            _report_usage_error(ctx, error)
            raise

    def invoke(self, ctx: Any) -> Any:
        """Run the command; turn a GenbufferError into its message and exit code."""
        try:
            return super().invoke(ctx)
        except typer.TyperException as error:
            _report_usage_error(ctx, error)
            raise
        except GenbufferError as error:
            runtime = ctx.obj if isinstance(ctx.obj, Runtime) else None
            report_error(error, as_json=bool(runtime and runtime.json_output))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(130) from None


def _report_usage_error(ctx: Any, error: typer.TyperException) -> None:
    """A Click usage error (exit code 2: a bad value, an unknown option or command) said
    the way every genbuf error is: one `error:` line and a `hint:` line naming the
    command's --help, instead of Click's usage block; with --json, the error document on
    stdout too. Raises typer.Exit(2) once said; anything else is left to typer (a group
    called without a command prints its help, exit 2, as Click does)."""
    if getattr(error, "exit_code", 1) != 2:
        return
    where = getattr(error, "ctx", None) or ctx
    if error.format_message() == where.get_help():  # no_args_is_help: the help is the message
        return
    said = UsageError(error.format_message(), hint=f"see '{where.command_path} --help'")
    report_error(said, as_json=bool(ctx.meta.get("genbuf.json")))
    raise typer.Exit(2) from None


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
            help="Read settings from this env file (a Laravel .env works as it is; /dev/null: "
            "none, overriding GENBUF_ENV_FILE).",
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


app = _new_app()


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
