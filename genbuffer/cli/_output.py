"""Rendering: rich for people on stdout, one JSON document for `--json`, errors on stderr."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console
    from rich.table import Table

    from genbuffer.errors import GenbufferError
    from genbuffer.operations.exclusion import LeaseState
    from genbuffer.runtime import Runtime

__all__ = [
    "emit",
    "error_document",
    "fields_table",
    "note_already_running",
    "plain_fields",
    "plain_table",
    "plain_text",
    "printable",
    "report_error",
    "stderr",
    "stdout",
    "write_json",
]


def stdout() -> Console:
    """A console on stdout (created per call so test runners can swap the stream)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr() -> Console:
    """A console on stderr for progress, notes and errors."""
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def emit(
    rt: Runtime,
    result: BaseModel,
    human: Callable[[Console], None],
    plain: Callable[[], list[str]] | None = None,
) -> None:
    """Print ``result`` as one JSON document (with `warnings`), or let ``human`` render it;
    when stdout is no terminal (a pipe, cron's mail) and ``plain`` is given, its lines,
    without loading rich.

    Every document has `ok`: a result model without one is a programming error.
    """
    if rt.json_output:
        document = result.model_dump(mode="json")
        if "ok" not in document:
            raise TypeError(f"{type(result).__name__} has no `ok` field")
        if rt.warnings:
            document["warnings"] = list(rt.warnings)
        write_json(document)
    elif plain is not None and not sys.stdout.isatty():
        sys.stdout.write("".join(f"{line}\n" for line in plain()))
        sys.stdout.flush()
    else:
        human(stdout())


def write_json(document: dict[str, Any]) -> None:
    """One JSON document, one line, on stdout."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escaped(value: object) -> str:
    """Control characters (an ESC that would clear the screen, say) shown as escapes."""
    text = "-" if value is None else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def printable(value: object) -> str:
    """Text from content or keys, safe for a terminal and for rich: control characters
    shown as escapes, and rich markup escaped."""
    from rich.markup import escape

    return escape(_escaped(value))


def note_already_running(job: str, holder: LeaseState | None) -> None:
    """The one stderr line a cron job prints when another run holds its lease: which."""
    where = "" if holder is None else f" ({printable(holder.describe())})"
    stderr().print(f"{job} is already running elsewhere{where}; nothing done")


def fields_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of labelled values."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # long keys fold at 80 columns, never cut alike
    for label, value in rows:
        table.add_row(label, printable(value))
    return table


def plain_text(value: object) -> str:
    """Text from content or keys for a plain line: control characters shown as escapes."""
    return _escaped(value)


def plain_fields(title: str, rows: list[tuple[str, Any]]) -> list[str]:
    """``fields_table`` as plain lines: the title, then each label and its value, aligned
    (control characters shown as escapes, as everywhere)."""
    width = max((len(label) for label, _ in rows), default=0)
    return [title, *(f"{label:<{width}}  {_escaped(value)}".rstrip() for label, value in rows)]


def plain_table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """A table as plain lines: the title, the header, then the rows, columns aligned."""
    cells = [header, *(tuple(_escaped(value) for value in row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return [title, *lines]


def report_error(error: GenbufferError, as_json: bool) -> None:
    """One `error:` line (and a `hint:` line) on stderr; with --json, an error document too.

    Plain text when stderr is not a terminal (cron, a pipe), without loading rich.
    """
    if sys.stderr.isatty():
        console = stderr()
        console.print(f"[red]error:[/red] {printable(error.message)}")
        if error.hint:
            console.print(f"hint: {printable(error.hint)}")
    else:
        lines = [f"error: {_escaped(error.message)}"]
        if error.hint:
            lines.append(f"hint: {_escaped(error.hint)}")
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    if as_json:
        write_json(error_document(type(error).__name__, error.message, error.hint, error.exit_code))


def error_document(kind: str, message: str, hint: str | None, exit_code: int) -> dict[str, Any]:
    """The --json document of a failure: `ok` false and the error with its hint."""
    return {
        "ok": False,
        "error": {"type": kind, "message": message, "hint": hint, "exit_code": exit_code},
    }
