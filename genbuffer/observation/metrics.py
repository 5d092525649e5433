"""genbuf metrics: Prometheus exposition of status and of the database's counters.

Gauges come from a survey (``genbuffer.observation.status``); counters are counted from the
database (the compaction ledger, the validation issue rows), so they stay
monotonic across the cron processes that write them. A cron job's own run goes
to a textfile (``genbuffer.operations.job_runs``) for node_exporter's textfile collector.
Imported by the commands that print metrics only (start-up time).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    generate_latest,
    make_wsgi_app,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genbuffer.db.repository import Repository
from genbuffer.errors import GenbufferError
from genbuffer.observation.status import StatusOptions, StatusReport, collect_status
from genbuffer.redis import GenerationBuffer
from genbuffer.states import LedgerResult

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "CRON_JOBS",
    "MAX_CONNECTIONS",
    "METRICS_PATHS",
    "READ_TIMEOUT",
    "GenbufCollector",
    "LatestSurvey",
    "collected",
    "exposition",
    "metrics_app",
    "registry_for",
    "serve_metrics",
    "write_textfile",
]

CRON_JOBS = ("compact-pending", "purge-chunks", "purge-objects")
RESULTS = tuple(LedgerResult)


class GenbufCollector(Collector):
    """Collects on every scrape: one survey of the buffers and the database's counts."""

    def __init__(
        self, buffer: GenerationBuffer, repository: Repository, options: StatusOptions
    ) -> None:
        self.buffer = buffer
        self.repository = repository
        self.options = options

    def collect(self) -> Iterator[Metric]:
        """The metric families (see the metrics table of docs/operations.md)."""
        report = collect_status(self.buffer, self.repository, self.options)
        buffers = GaugeMetricFamily(
            "genbuf_buffers", "Buffers under the prefix, by state.", labels=["state"]
        )
        for state, count in report.generations.items():
            buffers.add_metric([state], count)
        yield buffers
        yield _gauge(
            "genbuf_buffer_oldest_pending_age_seconds",
            "How long the oldest finished or idle buffer has waited for compaction.",
            report.oldest_pending_age_seconds or 0.0,
        )
        yield _gauge(
            "genbuf_buffers_at_risk",
            "Buffers whose chunks expire before their next expected compaction.",
            report.at_risk,
        )
        yield _gauge("genbuf_keys_without_ttl", "Buffer keys that never expire.", report.no_ttl)
        if report.bytes is not None:
            yield _gauge(
                "genbuf_buffer_memory_bytes",
                "Redis memory of every buffer key (MEMORY USAGE, sampled).",
                report.bytes,
            )
        yield _gauge("genbuf_buffer_chunks", "Chunks in every buffer list.", report.chunks)
        yield _gauge(
            "genbuf_buffers_over_max_len",
            "Buffer lists longer than GENERATION_CHUNK_MAX_LEN.",
            report.over_max_len,
        )
        yield _gauge(
            "genbuf_generations_lost",
            "Rows never compacted, older than the chunk TTL, whose buffer is gone.",
            report.lost,
        )
        yield _gauge(
            "genbuf_scan_seconds",
            "How long this scrape's survey of Redis took.",
            report.scan_seconds,
        )
        yield from _prefix_families(report)
        yield from _worker_families(report.worker_queue or {})
        yield from self._database_families()

    def _database_families(self) -> Iterator[Metric]:
        """Counters and last-success times read from the database."""
        observations = self.repository.observations
        compactions = CounterMetricFamily(
            "genbuf_compactions", "Compactions by result (the ledger).", labels=["result"]
        )
        counted = observations.compactions()
        for result in RESULTS:
            compactions.add_metric([result], counted.get(result, 0))
        yield compactions
        issues = CounterMetricFamily(
            "genbuf_validation_issues",
            "Validation issues recorded, by code and severity.",
            labels=["code", "severity"],
        )
        by_code: Counter[tuple[str, str]] = Counter()
        for _, _, errors, _ in observations.issues():
            by_code.update(
                (str(issue.get("code", "?")), str(issue.get("severity", "error")))
                for issue in errors
                if isinstance(issue, dict)
            )
        for (code, severity), count in sorted(by_code.items()):
            issues.add_metric([code, severity], count)
        yield issues
        if self.options.max_len is not None:
            over = CounterMetricFamily(
                "genbuf_compactions_over_max_len",
                "Compactions of more chunks than GENERATION_CHUNK_MAX_LEN.",
            )
            over.add_metric([], observations.over_length(self.options.max_len))
            yield over
        success = GaugeMetricFamily(
            "genbuf_last_success_timestamp_seconds",
            "When each cron job last succeeded (source: the database, or the job's textfile).",
            labels=["job", "source"],
        )
        for job, (last, _) in observations.last_runs(CRON_JOBS).items():
            if last is not None:
                success.add_metric([job, "database"], last.timestamp())
        yield success


def _prefix_families(report: StatusReport) -> Iterator[Metric]:
    """Whether the buffers wait under another prefix than the configured one (then every
    gauge above reads 0: an alert must not stay green), and under which."""
    yield _gauge(
        "genbuf_prefix_mismatch",
        "1 when no buffer is under the configured prefix but some are under another.",
        1.0 if report.other_prefixes else 0.0,
    )
    elsewhere = GaugeMetricFamily(
        "genbuf_other_prefix_keys",
        "Buffer keys under another prefix, when none is under the configured one.",
        labels=["prefix"],
    )
    for prefix, count in report.other_prefixes.items():
        elsewhere.add_metric([prefix], count)
    yield elsewhere


def _worker_families(queue: dict[str, float | int | None]) -> Iterator[Metric]:
    """The worker fleet (always exported, 0 without workers, so that alerts can say
    "workers were seen and none is alive" and "a worker-only deployment compacts")."""
    yield _gauge(
        "genbuf_workers_alive",
        "genbuf worker processes with a recent heartbeat.",
        queue.get("consumers") or 0,
    )
    yield _gauge(
        "genbuf_workers_known",
        "genbuf worker processes seen in the last day (alive, or killed).",
        queue.get("workers_known") or 0,
    )
    yield _gauge(
        "genbuf_worker_events_parked",
        "Malformed compaction events set aside on the parked stream.",
        queue.get("parked") or 0,
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def registry_for(
    buffer: GenerationBuffer, repository: Repository, options: StatusOptions
) -> CollectorRegistry:
    """A registry holding genbuf's collector only (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GenbufCollector(buffer, repository, options))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)


def collected(registry: CollectorRegistry) -> CollectorRegistry:
    """A registry holding what ``registry`` collects now, fixed: one survey serves both
    the text printed and the file written (and an outage stops before any write)."""
    families = list(registry.collect())
    fixed = CollectorRegistry(auto_describe=False)
    fixed.register(_Fixed(families))
    return fixed


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """Write the exposition to ``path`` atomically (a temporary file, then a rename)."""
    write_to_textfile(str(path), registry)


class LatestSurvey(Collector):
    """What an exporter serves: every scrape gets the latest survey at once, never one of
    its own (a survey of 200,000 keys takes seconds, and concurrent scrapes each running
    one all time out). A scrape that finds the latest older than ``refresh`` seconds
    starts the next in the background; one is in flight at a time. A survey that fails
    (an outage) is logged in one line, and the one before is served, its age growing:
    ``genbuf_survey_age_seconds`` and ``genbuf_survey_ok`` say so."""

    def __init__(
        self, survey: Collector, refresh: float, log: Callable[[str], None] = print
    ) -> None:
        self._survey = survey
        self._refresh = refresh
        self._log = log
        self._lock = threading.Lock()
        self._idle = threading.Event()  # set while no survey is in flight
        self._idle.set()
        self._ok = True
        # the first survey in the foreground: an outage now is the command's error (exit 3)
        self._taken = time.monotonic()
        self._families = list(survey.collect())

    def collect(self) -> Iterator[Metric]:
        """The latest survey's families, with its age; starts the next one when due."""
        with self._lock:
            families, taken, ok = self._families, self._taken, self._ok
            if self._idle.is_set() and time.monotonic() - taken >= self._refresh:
                self._idle.clear()
                threading.Thread(target=self._run, name="genbuf-survey", daemon=True).start()
        yield from families
        yield _gauge(
            "genbuf_survey_age_seconds",
            "Age of the survey this scrape was served from (one runs at a time).",
            time.monotonic() - taken,
        )
        yield _gauge(
            "genbuf_survey_ok", "Whether the latest survey attempt succeeded.", 1.0 if ok else 0.0
        )

    def wait_idle(self, timeout: float) -> bool:
        """Whether no survey is in flight, waiting up to ``timeout`` seconds for one to end."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            families = list(self._survey.collect())
        except Exception as exc:  # a long-running exporter logs one line and goes on
            with self._lock:
                self._ok = False
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, GenbufferError):
                reason = exc.message
            self._log(f"survey failed, serving the one before: {reason}")
            return
        else:
            with self._lock:
                self._families, self._taken, self._ok = families, started, True
        finally:
            self._idle.set()


# the paths an exporter answers with the exposition: /metrics, where Prometheus scrapes,
# and / for a person with a browser; anything else is 404 (prometheus_client's own app
# serves the metrics on every path, and an empty 200 on /favicon.ico)
METRICS_PATHS = frozenset({"/", "/metrics"})


def metrics_app(registry: Collector) -> WSGIApplication:
    """prometheus_client's WSGI app (content negotiation, gzip, ``name[]`` filters, 405
    on other methods) on ``METRICS_PATHS`` only; any other path is 404."""
    exporter = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in METRICS_PATHS:
            return exporter(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"404 Not Found: genbuf serves its metrics on /metrics\n"]

    return app


# what an exporter gives one connection: idle or trickling sockets must not pile up
# threads (each connection is served by a thread of its own)
READ_TIMEOUT = 10.0  # seconds a connection has to send its whole request, then dropped
MAX_CONNECTIONS = 16  # connections served at once; one more is answered 503 and closed

_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\ngenbuf metrics: too many connections at once, try again\n"
)


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, ``max_connections`` of them at most: a connection over
    the cap is answered 503 at once and closed (a scraper tries again at its next
    interval), so the process's threads stay bounded however many sockets are open."""

    daemon_threads = True  # a scrape in hand never holds the process at exit
    request_queue_size = 64  # a burst of connections waits in the backlog, not in SYN retries
    max_connections = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread if a slot is free, else refuse it now."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):  # best effort: the client may be gone
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection (in its thread), then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _RequestReader(io.RawIOBase):
    """A socket's reads, each waiting at most until one deadline: a client that sends
    its request slowly (a byte at a time) is dropped as a silent one is."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        """Always: a reader."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Receive into ``buffer``; TimeoutError once the deadline has passed."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long to arrive")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _QuietHandler(WSGIRequestHandler):
    """One request a connection, which must arrive within ``timeout`` seconds (its
    reply is written with the same timeout); a connection that fails is dropped."""

    timeout = READ_TIMEOUT

    def setup(self) -> None:
        """The socket's reader replaced by one with the request's deadline."""
        super().setup()
        self.rfile.close()  # (the socket stays open: the handler's own reader only)
        self.rfile = io.BufferedReader(_RequestReader(self.connection, float(self.timeout)))

    def parse_request(self) -> bool:
        """The request's head, read by its deadline; then the reply's own timeout."""
        parsed = super().parse_request()
        self.connection.settimeout(self.timeout)
        return parsed

    def handle(self) -> None:
        """Serve the request; a client that is silent, too slow or gone is dropped."""
        with contextlib.suppress(OSError):  # TimeoutError included
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Log no request (a scrape every 15 s is no news)."""


def serve_metrics(
    registry: Collector,
    bind: str,
    port: int,
    *,
    read_timeout: float = READ_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> WSGIServer:
    """Serve ``metrics_app(registry)`` on ``bind``:``port`` (IPv4 or IPv6, as ``bind``
    resolves) in a daemon thread; the server is returned listening. An address that
    does not resolve or cannot be bound is OSError.

    At most ``max_connections`` connections are served at once (one thread each; one
    more is answered 503 and closed); each has ``read_timeout`` seconds to send its
    request, else it is dropped."""
    family, _, _, _, address = socket.getaddrinfo(
        bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    cap = max_connections

    class MetricsServer(_BoundedServer):
        address_family = family  # the class's: WSGIServer binds as it is constructed
        max_connections = cap

    class Handler(_QuietHandler):
        timeout = read_timeout

    server = make_server(
        str(address[0]), port, metrics_app(registry), MetricsServer, handler_class=Handler
    )
    threading.Thread(target=server.serve_forever, name="genbuf-metrics", daemon=True).start()
    return server
