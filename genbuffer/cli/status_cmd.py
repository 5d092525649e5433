"""genbuf status: buffers by state, what is at risk, and the database's counts."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import CompactionWithinOpt, IdleAfterOpt, JsonOpt, parse_id, runtime
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import RenderableType

    from genbuffer.observation.status import StatusOptions, StatusReport
    from genbuffer.runtime import Runtime

SPARK = "▁▂▃▄▅▆▇█"
SPARK_MINUTES = 30
LIST_COLUMNS = ("org", "scen", "gen", "state", "chunks", "bytes", "age", "idle", "ttl")


def status_cmd(
    ctx: typer.Context,
    organization_id: Annotated[
        int | None,
        typer.Option(
            "--org", parser=parse_id, metavar="<int>", help="Only this organization's buffers."
        ),
    ] = None,
    idle: IdleAfterOpt = "30m",
    compaction_within: CompactionWithinOpt = "1h",
    max_pending: Annotated[
        int | None,
        typer.Option("--max-pending", min=0, help="Exit 1 if more buffers wait for compaction."),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", help="Exit 1 if the oldest pending buffer waits longer."),
    ] = None,
    max_at_risk: Annotated[
        int | None,
        typer.Option("--max-at-risk", min=0, help="Exit 1 if more buffers are at risk."),
    ] = None,
    show_list: Annotated[
        bool, typer.Option("--list", help="List the buffers themselves, oldest first.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=1, max=1_000_000_000, help="Buffers listed with --list at most."
        ),
    ] = 100,
    states: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            help="With --list: only this state (streaming, finished, idle, quarantined, "
            "orphaned); repeatable.",
        ),
    ] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="With --list: only buffers this old.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="A live view, refreshed (Ctrl-C ends it).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.5, help="Seconds between --watch refreshes.")
    ] = 5.0,
    scan_pause: Annotated[
        float,
        typer.Option(
            "--scan-pause",
            min=0.0,
            max=10.0,
            help="Seconds to sleep between SCAN pages of 1,000 keys (spreads a large "
            "survey's load on a busy Redis).",
        ),
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Every buffer under the prefix by state, with what is at risk and the database's counts.

    States: streaming, finished (waiting for compaction), idle (no chunk for --idle),
    quarantined, orphaned (no row). at_risk: chunks whose TTL ends before the next
    expected compaction. lost: rows never compacted whose buffer is gone. Thresholds
    make it exit 1 when crossed, for a cron alert. Read-only: SCAN, never KEYS.
    Example: genbuf status --max-age 1h --max-at-risk 0 --json
    """
    from datetime import timedelta

    from genbuffer.durations import parse_age
    from genbuffer.errors import UsageError
    from genbuffer.observation.status import STATES, StatusOptions, Thresholds, collect_status

    rt = runtime(ctx, as_json)
    unknown = sorted(set(states or ()) - set(STATES))
    if unknown:
        raise UsageError(f"unknown --state {', '.join(unknown)}", hint=f"use {', '.join(STATES)}")
    if watch and as_json:
        raise UsageError("--watch is a view for people; --json prints one document")
    options = StatusOptions(
        idle=parse_age(idle),
        compaction_within=parse_age(compaction_within),
        organization_id=organization_id,
        list_limit=limit if show_list else 0,
        states=frozenset(states) if states else None,
        older_than=parse_age(older_than) if older_than else None,
        thresholds=Thresholds(
            max_pending=max_pending,
            max_age=parse_age(max_age) if max_age else None,
            max_at_risk=max_at_risk,
        ),
        max_len=rt.settings.generation_chunk_max_len,
        expiry_margin=timedelta(seconds=rt.settings.generation_expiry_margin),
        pause=scan_pause,
    )
    filters = _filters(organization_id, states, older_than)
    if watch and sys.stdout.isatty():
        _watch(rt, options, interval, filters)
        return
    report = collect_status(rt.buffer, rt.repository, options)
    emit(rt, report, lambda console: console.print(_view(report, None, filters)))
    if not report.ok:
        raise typer.Exit(1)


def _filters(org: int | None, states: list[str] | None, older_than: str | None) -> list[str]:
    """The filters given, as the user typed them (named when --list finds nothing)."""
    given = [] if org is None else [f"--org {org}"]
    given += [f"--state {', '.join(states)}"] if states else []
    return given + ([f"--older-than {older_than}"] if older_than else [])


def _watch(rt: Runtime, options: StatusOptions, interval: float, filters: list[str]) -> None:
    """Redraw the view every ``interval`` seconds until Ctrl-C; a survey that fails (Redis
    or the database gone, a key of another type) shows its error in place of the view
    until the next one succeeds (invariant 14: a long-running view outlives its servers)."""
    import time
    from datetime import UTC, datetime

    from rich.live import Live
    from rich.text import Text

    from genbuffer.errors import GenbufferError
    from genbuffer.observation.status import collect_status

    observations = rt.repository.observations
    with Live(auto_refresh=False, screen=False) as live:
        try:
            while True:
                try:
                    report = collect_status(rt.buffer, rt.repository, options)
                    rate = observations.compactions_per_minute(SPARK_MINUTES, datetime.now(UTC))
                    view: RenderableType = _view(report, rate, filters)
                except GenbufferError as error:  # a server's doing: said in place, tried again
                    said = f"error: {error.message}" + (
                        f"\nhint: {error.hint}" if error.hint else ""
                    )
                    view = Text(f"{said}\n(trying again every {interval:g} s; Ctrl-C ends)")
                live.update(view, refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return


def _sparkline(counts: list[int]) -> str:
    """One block character per value, scaled to the largest."""
    top = max(counts, default=0)
    if top == 0:
        return SPARK[0] * len(counts)
    return "".join(SPARK[min(len(SPARK) - 1, value * (len(SPARK) - 1) // top)] for value in counts)


def _view(report: StatusReport, rate: list[int] | None, filters: list[str]) -> RenderableType:
    """The report for people (with the compactions-per-minute sparkline under --watch);
    a --list that finds nothing is one line saying so, naming ``filters``."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    from genbuffer.durations import human_duration

    states = " · ".join(f"{state} {count}" for state, count in report.generations.items())
    memory = "unknown" if report.bytes is None else _size(report.bytes)
    hour, day = report.compactions["last_hour"], report.compactions["last_day"]
    lag = report.compaction_lag_seconds
    lines: list[RenderableType] = [
        f"buffers under prefix {printable(repr(report.prefix))}: {report.buffers}"
        f"  ({report.scanned_keys} keys scanned in {report.scan_seconds:.2f}s,"
        f" at {report.taken_at:%Y-%m-%d %H:%M:%S}Z)",
        f"  {states}",
        f"chunks {report.chunks}, Redis memory {memory}"
        f" (content counted by producers {_size(report.content_bytes)})",
        f"oldest pending {human_duration(report.oldest_pending_age_seconds)}"
        f" · at risk {report.at_risk} · keys without TTL {report.no_ttl}"
        f" · over max len {report.over_max_len}"
        f" · lost {report.lost}",
        "compactions last hour: " + _counts(hour) + "; last day: " + _counts(day),
        "compaction lag (last chunk to compacted) "
        + (
            " ".join(f"{name} {human_duration(value)}" for name, value in lag.items())
            if lag
            else "-"
        ),
        "validation issues last day: "
        + (
            ", ".join(f"{code} {n}" for code, n in report.validation_issues_last_day.items())
            or "none"
        ),
    ]
    if report.late_chunks_last_day:
        lines.append(
            "new streams that met an artifact last day: "
            + "; ".join(
                f"{outcome} " + ", ".join(f"{rule} {n}" for rule, n in rules.items())
                for outcome, rules in report.late_chunks_last_day.items()
            )
        )
    if (queue := report.worker_queue) is not None:
        age = queue["oldest_entry_age_seconds"]
        lines.append(
            f"worker queue: {queue['entries']} "
            f"{'entry' if queue['entries'] == 1 else 'entries'}, {queue['pending']} held by "
            f"a worker, oldest {human_duration(age)}; {queue['consumers']} "
            f"worker{'' if queue['consumers'] == 1 else 's'} alive"
            + (f"; {queue['parked']} malformed events parked" if queue.get("parked") else "")
        )
    lines.extend(
        f"job {lease.job}: {printable(lease.describe())}"
        if lease.state == "held"
        else f"[yellow]job {lease.job}:[/yellow] {printable(lease.describe())}"
        for lease in report.job_leases
    )
    if rate is not None:
        top = max(rate, default=0)
        lines.append(
            f"compactions per minute, last {len(rate)} min: {_sparkline(rate)} (max {top})"
        )
    for lost in report.lost_generations:
        lines.append(
            f"lost: generation {lost['generation_id']} (organization {lost['organization_id']}):"
            " never compacted, buffer gone"
        )
    lines.extend(f"[red]alert:[/red] {printable(alert)}" for alert in report.alerts)
    if report.entries == []:
        match = f" match {printable(', '.join(filters))}" if filters else ""
        lines.append(f"no buffers under prefix {printable(repr(report.prefix))}{match}")
    elif report.entries is not None:
        # made for 80 columns: the row's facts, then its last error on a line of its own
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
        for name in LIST_COLUMNS:
            table.add_column(name, no_wrap=True)
        errors: list[str] = []
        for entry in report.entries:
            ttl = "never" if entry.ttl_seconds == -1 else human_duration(entry.ttl_seconds)
            table.add_row(
                str(entry.organization_id),
                "-" if entry.scenario_id is None else str(entry.scenario_id),
                str(entry.generation_id),
                entry.state + (" [red]at risk[/red]" if entry.at_risk else ""),
                "-" if entry.chunks is None else str(entry.chunks),
                "-" if entry.bytes is None else _size(entry.bytes),
                human_duration(entry.age_seconds),
                human_duration(entry.idle_seconds),
                ttl,
            )
            if entry.last_error:
                errors.append(f"generation {entry.generation_id}: {printable(entry.last_error)}")
        lines.append(table)
        lines.extend(f"last error of {line}" for line in errors)
    return Group(*lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items())


def _size(value: int) -> str:
    """Bytes for people: 512 B, 1.2 KB, 3.4 MB."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"
