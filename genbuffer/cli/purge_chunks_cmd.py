"""genbuf purge-chunks: the cron retention purge of generation_chunks."""

from __future__ import annotations

from typing import Annotated

import typer

from genbuffer.cli._options import DryRunOpt, JsonOpt, MetricsTextfileOpt, runtime
from genbuffer.cli._output import emit, note_already_running
from genbuffer.cli._progress import progress_bar


def purge_chunks_cmd(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Age like 7d, 12h, 30m (a bare number is days). "
            "[default: GENERATION_CHUNKS_RETENTION_DAYS]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=1_000_000, help="Rows per transaction.")
    ] = 5000,
    dry_run: DryRunOpt = False,
    metrics_textfile: MetricsTextfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete chunk backups older than the retention age, of compacted generations only.

    Each run is recorded for doctor and metrics (and in --metrics-textfile).
    Example (cron): genbuf purge-chunks --older-than 7d --json
    """
    from genbuffer.durations import parse_age
    from genbuffer.operations.job_runs import job_run
    from genbuffer.operations.purge_chunks import purge_chunks

    rt = runtime(ctx, as_json)
    age = older_than or f"{rt.settings.generation_chunks_retention_days}d"
    parse_age(age, bare_days=True)  # a bad age is a usage error before any query
    age = f"{age.strip()}d" if age.strip().isdigit() else age  # (days, as Artisan's)
    with (
        job_run(
            rt.repository, "purge-chunks", textfile=metrics_textfile, record=not dry_run
        ) as run,
        progress_bar("purging") as advance,
    ):
        result = purge_chunks(
            rt.repository, age, batch_size=batch_size, dry_run=dry_run, progress=advance
        )
        run.skipped = result.already_running
        run.finish(
            clean=result.ok,
            counts={"purged": result.purged, "kept_not_compacted": result.kept_not_compacted},
        )
    verb = "would delete" if dry_run else "deleted"
    count = result.would_purge if dry_run else result.purged
    if result.already_running:
        note_already_running("purge-chunks", result.held_by)
    emit(
        rt,
        result,
        lambda console: console.print(
            f"{verb} {count} chunk backups older than {age} "
            f"(before {result.cutoff:%Y-%m-%d %H:%M} UTC); kept {result.kept_not_compacted} "
            "of generations not compacted"
        ),
    )
