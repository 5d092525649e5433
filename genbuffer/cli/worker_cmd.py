"""genbuf worker: a long-running compactor, reading the compaction-events stream."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated, Any

import typer

from genbuffer.cli._options import JsonOpt, runtime
from genbuffer.cli._output import emit, stderr, write_json


def worker_cmd(
    ctx: typer.Context,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", min=1, max=64, help="Compactions at once (1 on SQLite)."),
    ] = 4,
    idle: Annotated[
        str | None,
        typer.Option(
            "--idle",
            help="The sweeper also compacts unfinished buffers with no chunk for this long "
            "(a plain RPUSH producer never announces its end). Per fleet: every sweep "
            "applies the shortest --idle of the live workers.",
            show_default=False,
        ),
    ] = None,
    visibility: Annotated[
        str,
        typer.Option(
            "--visibility",
            help="An entry a worker took and did not acknowledge for this long is taken "
            "over by another (a worker that died).",
        ),
    ] = "5m",
    sweep_every: Annotated[
        str,
        typer.Option(
            "--sweep-every",
            help="How often the fleet looks for buffers nobody announced. Per fleet: the "
            "shortest of the live workers'.",
        ),
    ] = "1m",
    as_json: JsonOpt = False,
) -> None:
    """Compact finished buffers as producers announce them; many workers run at once.

    Producers' finish() adds an event to a Redis stream; workers read it in one
    consumer group, compact with --delete semantics and acknowledge after the
    commit. A sweeper (one worker a period) announces what no event names:
    finished buffers (an event lost, or a producer that only sets finished_at),
    those whose chunks expire within GENERATION_EXPIRY_MARGIN, and (with --idle)
    idle ones. A malformed event is parked on a stream of its own; a deleted
    stream, a failover or a reshard is logged and the worker goes on. SIGTERM or
    Ctrl-C: the compactions in hand finish, then it exits 0. --json: one JSON
    line per compaction (and per thing the server did) on stdout, then a summary
    line.
    Example: genbuf worker --concurrency 4 --idle 30m --json
    """
    from datetime import timedelta

    from genbuffer.compaction.audit import check_appendable
    from genbuffer.durations import parse_age
    from genbuffer.engine.worker import Worker, WorkerOptions

    rt = runtime(ctx, as_json)
    options = WorkerOptions(
        concurrency=concurrency,
        idle=parse_age(idle) if idle else None,
        visibility=parse_age(visibility),
        sweep_every=parse_age(sweep_every),
        expiry_margin=timedelta(seconds=rt.settings.generation_expiry_margin),
    )
    # a setting every compaction would fail on stops the worker here, in one line: not
    # each compaction in turn, for as long as it runs
    check_appendable(rt.compaction.audit_log)
    stop = threading.Event()
    for name in (signal.SIGTERM, signal.SIGINT):
        signal.signal(name, lambda *_: stop.set())
    worker = Worker(
        rt.buffer, rt.repository, rt.compaction, options, log=_log_json if as_json else _log_line
    )
    worker.prepare()  # the group and its connections, before it says it waits
    if not as_json:
        stderr().print(f"worker {options.consumer}: waiting for compaction events (Ctrl-C stops)")
    summary = worker.run(stop)
    emit(
        rt,
        summary,
        lambda console: console.print(
            f"worker {summary.consumer} stopped: compacted {summary.compacted}, "
            f"needless {summary.needless}, failed {summary.failed}, orphaned {summary.orphaned}, "
            f"taken over {summary.taken_over}, parked {summary.parked}, "
            f"interruptions {summary.interruptions}, sweeps {summary.sweeps}"
        ),
    )


def _log_json(record: dict[str, Any]) -> None:
    write_json(record)


def _log_line(record: dict[str, Any]) -> None:
    gen = record.get("generation_id")
    where = "" if gen is None else f"generation {gen}: "
    message = " ".join(str(record.get("message", "")).split())  # one line, whatever it holds
    sys.stdout.write(f"{record.get('outcome', '?')}: {where}{message}\n")
    sys.stdout.flush()
