"""genbuf migrate-compacted-from-metadata: move legacy blobs into the compacted column."""

from __future__ import annotations

from typing import Annotated

import typer

from genbuffer.cli._options import DryRunOpt, JsonOpt, runtime
from genbuffer.cli._output import emit, note_already_running
from genbuffer.cli._progress import progress_bar


def migrate_compacted_cmd(
    ctx: typer.Context,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per transaction.")
    ] = 500,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Move each metadata.compacted blob into scenario_generations.compacted.

    Idempotent and resumable: every batch commits, and a rerun continues.
    Example: genbuf migrate-compacted-from-metadata --batch-size 1000
    """
    from genbuffer.operations.migrate_compacted import migrate_compacted_from_metadata

    rt = runtime(ctx, as_json)
    with progress_bar("migrating") as advance:
        result = migrate_compacted_from_metadata(
            rt.repository, batch_size=batch_size, dry_run=dry_run, progress=advance
        )
    verb = "would move" if dry_run else "moved"
    count = result.would_migrate if dry_run else result.migrated
    if result.already_running:
        note_already_running("migrate-compacted-from-metadata", result.held_by)
    emit(
        rt,
        result,
        lambda console: console.print(
            f"{verb} {count} of {result.candidates} blobs in {result.batches} "
            f"batch{'' if result.batches == 1 else 'es'}; "
            f"conflicts left unchanged: {result.conflicts or 'none'}"
        ),
    )
