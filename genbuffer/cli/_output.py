"""Rendering: rich for people on stdout, one JSON document for `--json`, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console
    from rich.table import Table

    from genbuffer.errors import GenbufferError

__all__ = ["emit", "fields_table", "note_already_running", "report_error", "stderr", "stdout"]


def stdout() -> Console:
    """A console on stdout (created per call so test runners can swap the stream)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr() -> Console:
    """A console on stderr for progress, notes and errors."""
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def emit(result: BaseModel, as_json: bool, human: Callable[[Console], None]) -> None:
    """Print ``result`` as one JSON document, or let ``human`` render it."""
    if as_json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        human(stdout())


def note_already_running(job: str) -> None:
    """The one stderr line a cron job prints when another run holds its lock."""
    stderr().print(f"{job} is already running elsewhere; nothing done")


def fields_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of labelled values."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, escape("-" if value is None else str(value)))
    return table


def report_error(error: GenbufferError, as_json: bool) -> None:
    """One `error:` line (and a `hint:` line) on stderr; with --json, an error document too."""
    from rich.markup import escape

    console = stderr()
    console.print(f"[red]error:[/red] {escape(error.message)}")
    if error.hint:
        console.print(f"hint: {escape(error.hint)}")
    if as_json:
        document = {
            "ok": False,
            "error": {
                "type": type(error).__name__,
                "message": error.message,
                "exit_code": error.exit_code,
            },
        }
        sys.stdout.write(json.dumps(document) + "\n")
