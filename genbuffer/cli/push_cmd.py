"""genbuf push: stdin into a generation buffer, one chunk a line."""

from __future__ import annotations

from typing import Annotated

import typer

from genbuffer.cli._options import GenerationArg, JsonOpt, OrganizationArg, ScenarioOpt, runtime
from genbuffer.cli._output import emit


def push_cmd(
    ctx: typer.Context,
    organization_id: OrganizationArg,
    generation_id: GenerationArg,
    scenario_id: ScenarioOpt = None,
    finish: Annotated[
        bool, typer.Option("--finish", help="Mark the stream finished afterwards.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push stdin into the buffer, one chunk a line with its newline kept.

    Example: genbuf push 12 59 --finish < response.json
    """
    from genbuffer.ingest import push_lines

    rt = runtime(ctx, as_json)
    stdin = typer.get_binary_stream("stdin")
    result = push_lines(
        rt.buffer, organization_id, generation_id, stdin, scenario_id=scenario_id, finish=finish
    )
    emit(
        rt,
        result,
        lambda console: console.print(
            f"pushed {result.chunks} chunks ({result.bytes} bytes) to {result.key}; "
            f"it now holds {result.length}"
        ),
    )
