"""genbuf compact-generation: assemble, validate and persist one generation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import (
    DeleteOpt,
    DryRunOpt,
    GenerationArg,
    JsonOpt,
    OrganizationArg,
    RegenerationOpt,
    ScenarioOpt,
    regeneration_policy,
    runtime,
)
from genbuffer.cli._output import (
    emit,
    fields_table,
    plain_fields,
    plain_table,
    plain_text,
    printable,
)

if TYPE_CHECKING:
    from typing import Any

    from rich.console import Console

    from genbuffer.compaction import CompactionResult


def compact_generation(
    ctx: typer.Context,
    organization_id: OrganizationArg,
    generation_id: GenerationArg,
    scenario_id: ScenarioOpt = None,
    delete: DeleteOpt = False,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--soft",
            help="Abort on validation errors, or persist anyway."
            " [default: METADATA_VALIDATION_STRICT]",
            show_default=False,
        ),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Recorded in compacted_by.")] = "genbuf",
    dry_run: DryRunOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Compact a quarantined generation anyway.")
    ] = False,
    regeneration: RegenerationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Assemble a generation's Redis chunks and persist them into scenario_generations.

    Without --scenario-id the row's scenario key and the key without a scenario are
    both tried. A re-run with nothing new exits 0 ("already compacted").
    Example: genbuf compact-generation 12 59 --delete
    """
    from genbuffer.compaction import CompactionRequest, assemble_and_persist

    rt = runtime(ctx, as_json)
    request = CompactionRequest(
        organization_id=organization_id,
        generation_id=generation_id,
        scenario_id=scenario_id,
        delete=delete,
        strict=strict,
        compacted_by=by,
        dry_run=dry_run,
        force=force,
        regeneration=regeneration_policy(regeneration),
    )
    result = assemble_and_persist(
        request, buffer=rt.buffer, repository=rt.repository, config=rt.compaction
    )
    emit(rt, result, lambda console: _render(console, result), lambda: _plain(result))
    if not result.ok:
        raise typer.Exit(1)


def _title(result: CompactionResult) -> str:
    return f"generation {result.generation_id} (organization {result.organization_id})"


def _fields(result: CompactionResult) -> list[tuple[str, Any]]:
    return [
        ("key", result.key),
        ("mode", result.mode),
        ("persisted", result.persisted),
        ("chunks", f"{result.chunk_count} ({result.new_chunks} new)"),
        ("bytes", result.bytes),
        ("sha256", result.sha256),
        ("validation id", result.validation_id),
        ("buffer deleted", result.deleted),
    ]


def _plain(result: CompactionResult) -> list[str]:
    """The result as plain lines (stdout is no terminal): what _render shows, no rich."""
    status = plain_text(f"{_verdict(result)} {result.message}")
    lines = [status, *plain_fields(_title(result), _fields(result))]
    if result.issues:
        lines += plain_table(
            "issues",
            ("severity", "code", "path", "message"),
            [
                (issue["severity"], issue["code"], issue.get("path", ""), issue["message"])
                for issue in result.issues
            ],
        )
    return lines


def _render(console: Console, result: CompactionResult) -> None:
    from rich.table import Table

    colour = "green" if result.ok else "red"
    status = f"[{colour}]{_verdict(result)}[/{colour}]"
    console.print(f"{status} {printable(result.message)}")
    console.print(fields_table(_title(result), _fields(result)))
    if result.issues:
        table = Table("severity", "code", title="issues", title_justify="left")
        table.add_column("path", overflow="fold")
        table.add_column("message", overflow="fold", ratio=1)
        for issue in result.issues:
            table.add_row(
                issue["severity"],
                issue["code"],
                printable(issue.get("path", "")),
                printable(issue["message"]),
            )
        console.print(table)


def _verdict(result: CompactionResult) -> str:
    """ok or failed; a dry run only says what it would do (its message: "would …")."""
    if result.ok:
        return "ok"
    return "would fail" if result.dry_run else "failed"
