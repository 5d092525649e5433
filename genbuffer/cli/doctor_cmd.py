"""genbuf doctor: one line per check of the set-up, with a hint for each failure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.observation.doctor import DoctorReport

MARKS = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]", "fail": "[red]fail[/red]"}


def doctor_cmd(
    ctx: typer.Context,
    cron_max_age: Annotated[
        str,
        typer.Option("--cron-max-age", help="compact-pending must have succeeded this recently."),
    ] = "1h",
    purge_max_age: Annotated[
        str,
        typer.Option(
            "--purge-max-age",
            help="purge-chunks (and purge-objects, when offloading) must have succeeded "
            "this recently.",
        ),
    ] = "2d",
    as_json: JsonOpt = False,
) -> None:
    """Check the set-up: Redis (reachable, eviction policy, persistence, prefix), the
    database (reachable, schema, cron jobs' last success), the offload object store (it
    answers a listing), the audit log and clocks.

    Exit 1 if any check fails, 3 if Redis, the database or the object store is unreachable.
    Example: genbuf doctor --cron-max-age 15m
    """
    from genbuffer.durations import parse_age
    from genbuffer.objects.offload import Offload
    from genbuffer.observation.doctor import DoctorOptions, run_doctor

    rt = runtime(ctx, as_json)
    options = DoctorOptions(
        cron_max_age=parse_age(cron_max_age),
        purge_max_age=parse_age(purge_max_age),
        audit_log=rt.settings.metadata_validation_log,
        offloading=rt.settings.generation_offload_url is not None,
        prefix_note=rt.settings.prefix_warning(),
    )
    report = run_doctor(
        lambda: rt.buffer,
        rt.existing_repository,  # a read-only check: creates no SQLite file
        options,
        lambda: Offload.from_settings(rt.settings, always=True, create=False).store,
    )
    emit(rt, report, lambda console: _render(console, report))
    if report.unreachable:
        raise typer.Exit(3)
    if not report.ok:
        raise typer.Exit(1)


def _render(console: Console, report: DoctorReport) -> None:
    for check in report.checks:
        console.print(f"{MARKS[check.status]} {check.name}: {printable(check.message)}")
        if check.hint and check.status != "ok":
            console.print(f"       hint: {printable(check.hint)}")
