"""genbuf metrics: Prometheus metrics on stdout, in a textfile, or served."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import CompactionWithinOpt, IdleAfterOpt, JsonOpt, runtime
from genbuffer.cli._output import stderr, write_json
from genbuffer.errors import UsageError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def metrics_cmd(
    ctx: typer.Context,
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            help="Write to this file atomically (node_exporter's textfile collector).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    serve: Annotated[
        int | None,
        typer.Option(
            "--serve",
            min=1,
            max=65535,
            help="Serve /metrics on this port (an exporter: every scrape is served from the "
            "latest survey at once; 16 connections at a time, one more is answered 503, and "
            "each has 10 s to send its request).",
            show_default=False,
        ),
    ] = None,
    bind: Annotated[
        str, typer.Option("--bind", help="Address --serve listens on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    refresh: Annotated[
        str,
        typer.Option(
            "--refresh",
            help="With --serve: a scrape that finds the latest survey older than this starts "
            "the next one, in the background (one at a time).",
        ),
    ] = "15s",
    idle: IdleAfterOpt = "30m",
    compaction_within: CompactionWithinOpt = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Prometheus metrics: buffers by state, at risk, lost, and counters from the database.

    Gauges come from one survey of the buffers (as status); counters
    (genbuf_compactions_total, genbuf_validation_issues_total) are counted from the
    database, so they stay monotonic across cron processes. --serve answers every
    scrape from the latest survey (genbuf_survey_age_seconds says how old), listening
    on 127.0.0.1 unless --bind says otherwise; it serves 16 connections at a time (one
    more is answered 503 and closed) and drops one that has not sent its whole request
    within 10 s.
    Example (cron): genbuf metrics --textfile /var/lib/node_exporter/textfile/genbuf.prom
    """
    from datetime import timedelta

    from genbuffer.durations import parse_age
    from genbuffer.errors import check_textfile_folder
    from genbuffer.observation.metrics import collected, exposition, registry_for, write_textfile
    from genbuffer.observation.status import StatusOptions

    rt = runtime(ctx, as_json)
    if textfile is not None and serve is not None:
        raise UsageError("--textfile and --serve are two ways to publish: give one")
    every = parse_age(refresh).total_seconds()
    if textfile is not None:
        check_textfile_folder("--textfile", textfile)
    options = StatusOptions(
        idle=parse_age(idle),
        compaction_within=parse_age(compaction_within),
        max_len=rt.settings.generation_chunk_max_len,
        expiry_margin=timedelta(seconds=rt.settings.generation_expiry_margin),
    )
    registry = registry_for(rt.buffer, rt.repository, options)
    if serve is not None:
        _serve(registry, bind, serve, as_json, every)
        return
    snapshot = collected(registry)  # one survey; an outage is exit 3 before any write
    text = exposition(snapshot)
    if textfile is not None:
        try:
            write_textfile(textfile, snapshot)
        except OSError as exc:
            raise UsageError(f"cannot write --textfile {textfile}: {exc}") from None
        if as_json:
            write_json({"ok": True, "textfile": str(textfile), "bytes": len(text)})
        return
    if as_json:
        write_json({"ok": True, "exposition": text.decode()})
    else:
        sys.stdout.write(text.decode())


def _serve(
    registry: CollectorRegistry, bind: str, port: int, as_json: bool, refresh: float
) -> None:
    """Serve until SIGINT or SIGTERM, every scrape from the latest survey (the first is
    taken before listening: an outage then is exit 3)."""
    import signal
    import threading

    from prometheus_client import CollectorRegistry

    from genbuffer.observation.metrics import LatestSurvey, serve_metrics

    latest = LatestSurvey(registry, refresh, log=lambda line: stderr().print(line))
    served = CollectorRegistry(auto_describe=False)
    served.register(latest)
    try:
        serve_metrics(served, bind, port)
    except OSError as exc:
        raise _cannot_listen(bind, port, exc) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if as_json:
        write_json({"ok": True, "listening": f"{bind}:{port}"})
    else:
        stderr().print(f"serving metrics on http://{bind}:{port}/metrics (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a clean stop
        stop.wait()


def _cannot_listen(bind: str, port: int, exc: OSError) -> UsageError:
    """Why --serve could not listen, in words, and what to do (the OSError's own text
    is '[Errno 98] Address already in use')."""
    import errno
    import socket

    where = f"cannot listen on {bind}:{port}"
    if isinstance(exc, socket.gaierror):
        return UsageError(
            f"{where}: --bind {bind} is not an address this host resolves",
            hint="give an IP address of this host (127.0.0.1, or 0.0.0.0 for every interface)",
        )
    if exc.errno == errno.EADDRINUSE:
        return UsageError(
            f"{where}: the port is already in use",
            hint=f"another process listens there (an earlier genbuf metrics --serve?): give "
            f"--serve another port, or find it with: ss -ltnp 'sport = :{port}'",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return UsageError(
            f"{where}: {bind} is not an address of this host",
            hint="give --bind one of this host's addresses (ip -brief address), 127.0.0.1, or "
            "0.0.0.0 for every interface",
        )
    if exc.errno == errno.EACCES:
        return UsageError(
            f"{where}: permission denied",
            hint="ports below 1024 need privileges: give --serve a port above 1023 (node "
            "exporters use 9100 and up)",
        )
    return UsageError(f"{where}: {exc.strerror or exc}", hint="give --serve another port")
