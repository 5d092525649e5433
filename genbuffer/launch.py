"""The `genbuf` console script: start-up without garbage collections, then the CLI.

A command's start-up imports typer, pydantic, SQLAlchemy, redis-py, psycopg and
genbuffer: some 100,000 objects that live as long as the process, none of them
garbage. With the collector's default thresholds Python collects ~200 times while
they are made (~70 ms of a one-chunk compaction's ~1 s here, bench section 7). So the
collector is off for the first ``START_UP`` seconds; then what exists is frozen (never
scanned again: it is start-up's) and collection resumes as usual. A long-running
command (worker, compact-pending, metrics --serve) collects from then on; a short one
ends before.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["START_UP", "main"]

START_UP = 1.0  # seconds without collections at the start of a process


def main() -> None:
    """Console-script entry point: ``genbuffer.cli.main`` with start-up uncollected."""
    gc.disable()
    resume = threading.Timer(START_UP, resume_collection)
    resume.daemon = True  # a command that ends sooner does not wait for it
    resume.start()
    from genbuffer.cli import main as run  # noqa: PLC0415  (start-up itself)

    run()


def resume_collection() -> None:
    """Freeze what start-up made and collect as usual from now on."""
    gc.freeze()
    gc.enable()
