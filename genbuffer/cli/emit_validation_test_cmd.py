"""genbuf emit-validation-test: write a test issue row and audit line."""

from __future__ import annotations

from typing import Annotated

import typer

from genbuffer.cli._options import GenerationArg, JsonOpt, parse_id, runtime
from genbuffer.cli._output import emit


def emit_validation_test_cmd(
    ctx: typer.Context,
    generation_id: GenerationArg,
    organization_id: Annotated[
        int | None,
        typer.Option("--org", parser=parse_id, metavar="<int>", help="Organization id to record."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one synthetic validation issue (JSONL line and DB row) and print its id.

    Example: genbuf emit-validation-test 9999
    """
    from genbuffer.observation.emit_test_issue import emit_validation_test

    rt = runtime(ctx, as_json)
    result = emit_validation_test(
        rt.repository,
        rt.settings.metadata_validation_log,
        generation_id,
        organization_id,
        strict=rt.settings.metadata_validation_strict,
    )
    emit(
        rt,
        result,
        lambda console: console.print(
            f"validation_id {result.validation_id} written to metadata_validation_issues "
            f"and {result.log}"
        ),
    )
