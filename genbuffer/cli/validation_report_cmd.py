"""genbuf validation-report: validation issues over a period, and strict mode's verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit, printable

if TYPE_CHECKING:
    from rich.console import Console

    from genbuffer.observation.validation_report import ValidationReport


def validation_report_cmd(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option("--since", help="The period: 7d, 24h, 90m (back from now).")
    ] = "7d",
    as_json: JsonOpt = False,
) -> None:
    """Validation issues by code and severity, per day, and how many of the period's soft
    compactions strict mode would have aborted (ask before METADATA_VALIDATION_STRICT=true).

    Example: genbuf validation-report --since 1d
    """
    from genbuffer.durations import parse_age
    from genbuffer.observation.validation_report import validation_report

    rt = runtime(ctx, as_json)
    report = validation_report(rt.repository, parse_age(since))
    emit(rt, report, lambda console: _render(console, report, since))


def _render(console: Console, report: ValidationReport, since: str) -> None:
    from rich.table import Table

    console.print(
        f"validation issues since {report.since:%Y-%m-%d %H:%M}Z ({since}): "
        f"{report.issue_rows} validations with issues"
        + (
            " (" + ", ".join(f"{mode} {n}" for mode, n in sorted(report.by_mode.items())) + ")"
            if report.by_mode
            else ""
        )
    )
    if report.codes:
        # codes never cut ("chunk_count_mism…") at 80 columns: the examples fold and
        # the date and time of "last seen" go on two lines first (no padding at the
        # table's edges: the columns' narrowest then fit in 80)
        table = Table(pad_edge=False)
        table.add_column("code", no_wrap=True, overflow="fold")
        for header in ("severity", "count", "generations"):
            table.add_column(header, no_wrap=True)
        table.add_column("examples", overflow="fold")
        table.add_column("last seen", min_width=10)  # a date, then its time below
        for code in report.codes:
            table.add_row(
                printable(code.code),
                code.severity,
                str(code.count),
                str(code.generations),
                ", ".join(map(str, code.examples)),
                f"{code.last_seen:%Y-%m-%d %H:%M}",
            )
        console.print(table)
    for day, found in report.per_day.items():
        console.print(
            f"  {day}: {found['rows']} validations, {found['errors']} errors, "
            f"{found['warnings']} warnings"
        )
    ratio = report.strict_would_abort_ratio
    console.print(
        f"strict mode would have aborted {report.strict_would_abort} of "
        f"{report.compactions.get('soft_persisted', 0)} soft compactions"
        + ("" if ratio is None else f" ({ratio:.1%})")
        + f"; strict aborts {report.compactions.get('strict_abort', 0)}, "
        f"failed {report.compactions.get('failed', 0)}"
    )
