"""genbuf test-redis-buffer: smoke test of the configured Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.observation.redis_probe import SmokeResult


def test_redis_buffer(
    ctx: typer.Context,
    chunks: Annotated[
        int, typer.Option("--chunks", min=1, max=100_000, help="How many chunks to push.")
    ] = 20,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the test keys in Redis.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push, read back and clean up a throw-away buffer; exit 1 if any check fails.

    Example: genbuf test-redis-buffer --chunks 100
    """
    from genbuffer.observation.redis_probe import smoke_test

    rt = runtime(ctx, as_json)
    result = smoke_test(rt.buffer, chunks=chunks, keep=keep)
    emit(rt, result, lambda console: _render(console, result))
    if not result.ok:
        raise typer.Exit(1)


def _render(console: Console, result: SmokeResult) -> None:

    for check in result.checks:
        mark = (
            "[red]FAIL[/red]"
            if not check.ok
            else "[yellow]WARN[/yellow]"
            if check.warn
            else "[green]PASS[/green]"
        )
        console.print(f"{mark} {check.name}: {printable(check.detail)}")
    verdict = "passed" if result.ok else "FAILED"
    console.print(f"smoke test {verdict} in {result.elapsed_ms} ms ({printable(result.key)})")
