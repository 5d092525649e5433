"""genbuf inspect-generation: the buffer keys of a generation, optionally deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from genbuffer.cli._options import (
    DeleteOpt,
    GenerationArg,
    JsonOpt,
    OrganizationArg,
    ScenarioOpt,
    YesOpt,
    confirm_deletion,
    runtime,
)
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.observation.inspect_generation import InspectionResult


def inspect_generation_cmd(
    ctx: typer.Context,
    organization_id: OrganizationArg,
    generation_id: GenerationArg,
    scenario_id: ScenarioOpt = None,
    delete: DeleteOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List a generation's Redis keys with type, length, TTL and memory.

    Without --scenario-id the scenario keys are found with SCAN. --delete removes
    them; chunks that no row holds are deleted only with --yes (or at the prompt).
    Example: genbuf inspect-generation 12 59 --scenario-id 345
    """
    from genbuffer.observation.inspect_generation import inspect_generation

    rt = runtime(ctx, as_json)
    result = inspect_generation(
        rt.buffer,
        organization_id,
        generation_id,
        scenario_id,
        delete,
        repository=rt.repository if delete else None,
        confirm=confirm_deletion(yes, as_json),
    )
    emit(rt, result, lambda console: _render(console, result))
    if not result.ok:
        raise typer.Exit(1)


def _render(console: Console, result: InspectionResult) -> None:
    from rich.table import Table

    if not result.keys:
        console.print(f"no Redis keys for generation {result.generation_id}")
        return
    table = Table("type", "length", "ttl", "memory")
    table.add_column("key", overflow="fold", ratio=1)
    for key in result.keys:
        memory = "-" if key.memory_bytes is None else f"{key.memory_bytes} B"
        table.add_row(key.type, str(key.length), f"{key.ttl}s", memory, printable(key.key))
    console.print(table)
    if result.deleted:
        console.print(f"deleted {result.deleted} keys")
    elif result.unpersisted_chunks:
        console.print(f"kept: {result.unpersisted_chunks} chunks that no row holds")
