"""Run a worker (genbuf's or the raw script) counting its round trips to Redis and
PostgreSQL; at exit the counts go to a JSON file.

A Redis round trip is one ``send_packed_command`` (a pipeline or MULTI/EXEC sent at
once is one); a PostgreSQL round trip is one wait for a server's results (psycopg's
``execute`` generator: a statement, a BEGIN, a COMMIT). SIGUSR1 writes the counts so
far to OUT.json.start (the bench sends it once the worker waits, so that its start-up
is left out). Usage (bench section 9):
    python bench/trips.py OUT.json genbuf worker …
    python bench/trips.py OUT.json path/to/script.py ARGS…
"""

from __future__ import annotations

import atexit
import json
import runpy
import signal
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import psycopg._connection_base
import psycopg._cursor_base
import psycopg.generators
import redis.connection

counts = {"redis": 0, "postgres": 0}


def _counted_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    def execute(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        counts["postgres"] += 1
        return (yield from original(*args, **kwargs))

    return execute


psycopg.generators.execute = _counted_execute(psycopg.generators.execute)  # type: ignore[assignment]
psycopg._cursor_base.execute = _counted_execute(psycopg._cursor_base.execute)  # type: ignore[attr-defined]

_send = redis.connection.AbstractConnection.send_packed_command


def _counted_send(self: Any, *args: Any, **kwargs: Any) -> None:
    counts["redis"] += 1
    _send(self, *args, **kwargs)


redis.connection.AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]


def _write(path: str) -> None:
    Path(path).write_text(json.dumps(counts))


def main() -> None:
    out, target, *rest = sys.argv[1:]
    atexit.register(_write, out)
    # SIGUSR1: the counts so far to OUT.start (the bench's mark once the worker waits)
    signal.signal(signal.SIGUSR1, lambda *_: _write(out + ".start"))
    if target == "genbuf":
        from genbuffer.cli import main as genbuf  # noqa: PLC0415

        sys.argv = ["genbuf", *rest]
        genbuf()
    else:
        sys.argv = [target, *rest]
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
