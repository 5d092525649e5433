"""Options and arguments shared by the commands, each defined once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from genbuffer.errors import UsageError
from genbuffer.keys import validate_id
from genbuffer.runtime import Runtime

__all__ = [
    "CompactionWithinOpt",
    "DeleteOpt",
    "DryRunOpt",
    "GenerationArg",
    "IdleAfterOpt",
    "JsonOpt",
    "MetricsTextfileOpt",
    "OrganizationArg",
    "RegenerationOpt",
    "ScenarioOpt",
    "YesOpt",
    "confirm_deletion",
    "parse_id",
    "regeneration_policy",
    "runtime",
]


def parse_id(value: str) -> int:
    """An id as typed: ASCII digits only (not `+12`, `1_2`, ` 12`), 1 to 2**63-1."""
    if isinstance(value, int):  # a default, already an id
        return value
    try:
        return validate_id(value)
    except UsageError as error:
        raise typer.BadParameter(error.message) from None


OrganizationArg = Annotated[
    int,
    typer.Argument(
        metavar="ORG",
        parser=parse_id,
        help="Organization id (a positive integer).",
        show_default=False,
    ),
]
GenerationArg = Annotated[
    int,
    typer.Argument(
        metavar="GEN",
        parser=parse_id,
        help="Generation id (a positive integer).",
        show_default=False,
    ),
]
ScenarioOpt = Annotated[
    int | None,
    typer.Option(
        "--scenario-id",
        parser=parse_id,
        metavar="<int>",  # (typer 0.28 would name the parser)
        help="Scenario id, when the key carries one.",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")
]
DeleteOpt = Annotated[bool, typer.Option("--delete", help="Remove the Redis buffer afterwards.")]
RegenerationOpt = Annotated[
    str | None,
    typer.Option(
        "--regeneration",
        help="A new stream of a generation whose artifact is whole: replace it (kept in "
        "the history) or append to it. [default: GENERATION_REGENERATION, replace]",
        show_default=False,
    ),
]
IdleAfterOpt = Annotated[
    str, typer.Option("--idle", help="An open stream this quiet counts as idle.")
]
CompactionWithinOpt = Annotated[
    str,
    typer.Option(
        "--compaction-within",
        help="The next compaction is expected within this (the compact-pending cron "
        "period): a buffer whose TTL ends sooner is at risk.",
    ),
]
MetricsTextfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-textfile",
        help="Record this run in a Prometheus textfile (node_exporter's textfile "
        "collector), written atomically.",
        dir_okay=False,
        show_default=False,
    ),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Delete chunks that no row holds without asking.")
]


def regeneration_policy(value: str | None) -> str | None:
    """--regeneration checked: replace, append, or None (the setting decides)."""
    if value is not None and value not in {"replace", "append"}:
        raise UsageError(f"--regeneration must be replace or append, got {value!r}")
    return value


def confirm_deletion(yes: bool, as_json: bool) -> Callable[[int], bool]:
    """What to do before deleting chunks no row holds: --yes, a prompt, or a usage error."""

    def confirm(count: int) -> bool:
        if yes:
            return True
        if not as_json and sys.stdin.isatty():
            return typer.confirm(f"{count} chunks in these keys are held by no row; delete them?")
        raise UsageError(
            f"refusing to delete {count} chunks that no row holds",
            hint="compact them first, or add --yes to delete them anyway",
        )

    return confirm


def runtime(ctx: typer.Context, as_json: bool) -> Runtime:
    """The Runtime built by the root callback; records --json for the error boundary."""
    found: Runtime = ctx.find_root().obj
    found.json_output = as_json
    return found
