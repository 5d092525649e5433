"""genbuf compact-pending: the cron batch compaction of finished buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import (
    DryRunOpt,
    JsonOpt,
    MetricsTextfileOpt,
    RegenerationOpt,
    regeneration_policy,
    runtime,
)
from genbuffer.cli._output import emit, note_already_running, printable
from genbuffer.cli._progress import progress_bar

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.engine.burst import PendingResult


def compact_pending_cmd(
    ctx: typer.Context,
    idle: Annotated[
        str | None,
        typer.Option(
            "--idle",
            help="Also compact unfinished buffers with no chunk for this long (e.g. 30m).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, max=1_000_000_000, help="Compact at most this many buffers."
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the buffers (no --delete).")] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=32,
            help="Generations compacted at once, each in its own transaction (1 on SQLite).",
        ),
    ] = 4,  # engine.burst.DEFAULT_WORKERS, not imported here: --help loads no service module
    regeneration: RegenerationOpt = None,
    dry_run: DryRunOpt = False,
    metrics_textfile: MetricsTextfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact every finished buffer (and idle ones with --idle), deleting each after commit.

    Every buffer under the prefix is considered, with or without a meta hash. Idle is
    judged by last_chunk_at and by genbuf's own looks at the buffer (how many chunks,
    since when), never by anything a reader does. A buffer whose chunks expire within
    GENERATION_EXPIRY_MARGIN is compacted too, idle or not: chunks arriving later
    continue it (or replace it; see GENERATION_LATE_CHUNKS). Exit 1 if any
    generation failed or has no row (the others are still compacted), or if no buffer
    is under the prefix while some are under another. Each run is recorded for doctor
    and metrics (and in --metrics-textfile).
    Example (cron): genbuf compact-pending --idle 30m --json
    """
    from datetime import timedelta

    from genbuffer.compaction.audit import check_appendable
    from genbuffer.durations import parse_age
    from genbuffer.engine.burst import compact_pending
    from genbuffer.operations.job_runs import job_run

    rt = runtime(ctx, as_json)
    age = parse_age(idle) if idle else None
    with (
        job_run(
            rt.repository, "compact-pending", textfile=metrics_textfile, record=not dry_run
        ) as run,
        progress_bar("compacting") as advance,
    ):
        if not dry_run:  # (a setting every compaction would fail on: said once)
            check_appendable(rt.compaction.audit_log)
        result = compact_pending(
            rt.buffer,
            rt.repository,
            rt.compaction,
            idle=age,
            limit=limit,
            delete=not keep,
            dry_run=dry_run,
            progress=advance,
            workers=workers,
            regeneration=regeneration_policy(regeneration),
            expiry_margin=timedelta(seconds=rt.settings.generation_expiry_margin),
        )
        run.skipped = result.already_running
        run.finish(
            clean=result.ok,
            counts={
                "compacted": result.compacted,
                "failed": result.failed,
                "orphaned": len(result.orphaned),
                "buffers": result.buffers,
            },
        )
    if result.already_running:
        note_already_running("compact-pending", result.held_by)
    emit(rt, result, lambda console: _render(console, result))
    if not result.ok:
        raise typer.Exit(1)


def _render(console: Console, result: PendingResult) -> None:

    verb = "would compact" if result.dry_run else "compacted"
    done = result.would_compact if result.dry_run else result.compacted
    console.print(
        f"{verb} {done} of {result.eligible} eligible buffers ({result.buffers} seen; "
        f"{result.skipped_active} still streaming, {result.skipped_quarantined} quarantined, "
        f"{result.skipped_orphaned} orphaned); failed {result.failed}"
        + (f"; {result.at_risk} about to expire, compacted early" if result.at_risk else "")
        + (
            f"; {result.already_persisted} already in their rows (buffers removed)"
            if result.already_persisted
            else ""
        )
    )
    for failure in result.failures:
        named = f"generation {failure['generation_id']}: "
        error = str(failure["error"])  # some errors name their generation already
        console.print(f"failed: {printable(error if error.startswith(named) else named + error)}")
    for found in result.issues:
        console.print(
            f"issues: generation {found.generation_id} (organization {found.organization_id}): "
            + ", ".join(printable(code) for code in found.codes)
        )
    for orphan in result.orphaned:
        console.print(
            f"orphaned (no row; set aside until it expires): {printable(str(orphan['key']))}"
        )
