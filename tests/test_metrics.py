"""genbuf metrics: the exposition parses, counters come from the database (monotonic
across processes), cron runs write their textfile, and --serve serves."""

from __future__ import annotations

import contextlib
import json
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from genbuffer.errors import RedisUnavailable
from genbuffer.observation.metrics import (
    MAX_CONNECTIONS,
    READ_TIMEOUT,
    LatestSurvey,
    serve_metrics,
)
from genbuffer.operations.job_runs import job_run
from tests.conftest import Stack, require_server
from tests.support.runner import run_genbuf, spawn_genbuf
from tests.support.servers import PrivateRedis, free_port
from tests.support.urls import IN_CI, REPO_ROOT
from tests.support.wait import wait_until
from tests.test_status import ORG, build_fixture

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition by (name, sorted labels), via prometheus_client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_exposition_parses(stack: Stack) -> None:
    """Gauges from the survey, counters from the ledger and the issue rows."""
    build_fixture(stack)
    assert stack.cli("emit-validation-test", "5", "--org", str(ORG)).exit_code == 0
    result = stack.cli("metrics")
    assert result.exit_code == 0, result.output
    found = samples(result.stdout)
    states = {"streaming": 2, "finished": 2, "idle": 1, "quarantined": 1, "orphaned": 1}
    for state, count in states.items():
        assert found[("genbuf_buffers", (("state", state),))] == count
    assert found[("genbuf_buffers_at_risk", ())] == 1
    assert found[("genbuf_keys_without_ttl", ())] == 1
    assert found[("genbuf_generations_lost", ())] == 1
    assert found[("genbuf_compactions_total", (("result", "persisted"),))] == 1
    issue = (("code", "validation_test"), ("severity", "warning"))
    assert found[("genbuf_validation_issues_total", issue)] == 1
    age = found[("genbuf_buffer_oldest_pending_age_seconds", ())]
    assert 7100 < age < 7300
    as_json = json.loads(stack.cli("metrics", "--json").stdout)
    assert as_json["ok"] and "genbuf_buffers" in as_json["exposition"]


def test_textfile_is_written_atomically(embedded: Stack, tmp_path: Path) -> None:
    """--textfile writes the same exposition to a file; a missing directory is exit 2."""
    build_fixture(embedded)
    target = tmp_path / "genbuf.prom"
    result = embedded.cli("metrics", "--textfile", str(target))
    assert result.exit_code == 0 and result.stdout == ""
    assert samples(target.read_text())[("genbuf_buffers", (("state", "idle"),))] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("genbuf.prom")] == [
        "genbuf.prom"
    ]  # no temporary file left
    missing = embedded.cli("metrics", "--textfile", str(tmp_path / "nowhere" / "x.prom"))
    assert missing.exit_code == 2 and "no such directory" in missing.output


@pytest.mark.parametrize(
    "args",
    [
        ["metrics", "--textfile"],
        ["compact-pending", "--metrics-textfile"],
        ["purge-chunks", "--metrics-textfile"],
        ["purge-chunks", "--dry-run", "--metrics-textfile"],
    ],
)
@pytest.mark.parametrize("where", ["nowhere/x.prom", "file/x.prom", "file/deeper/x.prom"])
def test_a_textfile_into_no_directory_is_one_error_line_and_a_hint(
    embedded: Stack, tmp_path: Path, args: list[str], where: str
) -> None:
    """A textfile whose directory is missing, or is a file (it said "no such directory"
    of an existing file; metrics --textfile gave no hint): exit 2 before anything runs,
    the error naming what is wrong and a hint saying what to do."""
    (tmp_path / "file").write_bytes(b"")
    target = tmp_path / where
    done = embedded.cli(*args, str(target))
    assert done.exit_code == 2 and done.stdout == "", done.output
    error, hint = done.stderr.splitlines()
    assert error.startswith(f"error: cannot write {args[-1]} {target}: "), error
    if where.startswith("nowhere"):
        assert error.endswith(f"no such directory {target.parent}"), error
        assert hint.startswith(f"hint: create the directory first (mkdir -p {target.parent})")
    else:
        assert error.endswith(f"{tmp_path / 'file'} is not a directory"), error
        assert hint.startswith(f"hint: {tmp_path / 'file'} is a file: give {args[-1]} a path")
    assert hint.endswith("node_exporter's --collector.textfile.directory"), hint
    assert not target.parent.is_dir()


def test_counters_stay_monotonic_across_processes(servers: Stack) -> None:
    """Each compaction is its own process (as cron runs it); the counter adds them up."""
    env = servers.env
    before = samples(run_genbuf(["metrics"], env).stdout)
    key = ("genbuf_compactions_total", (("result", "persisted"),))
    assert before[key] == 0
    for _ in range(2):
        gen = servers.repository.create_generation(ORG)
        servers.buffer.push_chunk(ORG, gen, b"[]")
        assert run_genbuf(["compact-generation", str(ORG), str(gen)], env).returncode == 0
        scraped = samples(run_genbuf(["metrics"], env).stdout)
        assert scraped[key] == before[key] + 1
        before = scraped


def test_cron_run_writes_its_textfile(servers: Stack, tmp_path: Path) -> None:
    """compact-pending --metrics-textfile records the run; a run stopped by an outage
    keeps the last success and says the run failed; doctor reads the database's record."""
    env = servers.env
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, [b"[1,", b"2]"])
    servers.buffer.finish(ORG, gen)
    textfile = tmp_path / "genbuf-compact.prom"
    done = run_genbuf(["compact-pending", "--metrics-textfile", str(textfile)], env)
    assert done.returncode == 0, done.stderr
    first = samples(textfile.read_text())
    success = (
        "genbuf_last_success_timestamp_seconds",
        (("job", "compact-pending"), ("source", "textfile")),
    )
    assert abs(first[success] - time.time()) < 60
    assert first[("genbuf_job_items", (("job", "compact-pending"), ("outcome", "compacted")))] == 1
    assert first[("genbuf_job_last_run_ok", (("job", "compact-pending"),))] == 1
    outage = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    failed = run_genbuf(["compact-pending", "--metrics-textfile", str(textfile)], outage)
    assert failed.returncode == 3, failed.stderr
    second = samples(textfile.read_text())
    assert second[success] == first[success]  # kept from the run that succeeded
    assert second[("genbuf_job_last_run_ok", (("job", "compact-pending"),))] == 0
    scraped = samples(run_genbuf(["metrics"], env).stdout)
    from_db = (
        "genbuf_last_success_timestamp_seconds",
        (("job", "compact-pending"), ("source", "database")),
    )
    assert abs(scraped[from_db] - first[success]) < 5
    doctor = json.loads(run_genbuf(["doctor", "--json"], env).stdout)
    cron = {c["name"]: c for c in doctor["checks"]}["cron compact-pending"]
    assert cron["status"] == "ok" and "its last run failed" in cron["message"], cron


def test_serve_answers_scrapes_and_stops_on_sigterm(servers: Stack) -> None:
    """--serve is an exporter: scrapes see a new buffer once a survey taken after it is
    served (--refresh 1s); SIGTERM stops it with exit 0."""
    port = free_port()
    process = spawn_genbuf(["metrics", "--serve", str(port), "--refresh", "1s"], servers.env)
    url = f"http://127.0.0.1:{port}/metrics"
    orphaned = ("genbuf_buffers", (("state", "orphaned"),))

    def scrape() -> Samples:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return samples(reply.read().decode())

    def listening() -> Samples | None:
        assert process.poll() is None, "the exporter exited"
        try:
            return scrape()
        except OSError:  # not listening yet
            return None

    def counted() -> Samples | None:  # each scrape is served at once, from the latest survey
        seen = scrape()
        return seen if seen[orphaned] == 1 else None

    try:
        first = wait_until(listening, 20, "the exporter to answer a scrape")
        assert first[("genbuf_buffers", (("state", "finished"),))] == 0
        servers.buffer.push_chunk(ORG, 5, b"x")
        servers.buffer.finish(ORG, 5)
        again = wait_until(counted, 20, "a survey that counts the new buffer")
        assert again[("genbuf_survey_ok", ())] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_serve_on_a_port_in_use_is_one_error_line_and_a_hint(embedded: Stack) -> None:
    """--serve on a port another process listens on (or --bind an address this host does
    not have): exit 2 at once, the error in words (it printed "[Errno 98] Address
    already in use") and a hint saying what to do; --json the same in its document."""
    build_fixture(embedded)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = embedded.cli("metrics", "--serve", str(port))
        assert done.exit_code == 2 and done.stdout == "", done.output
        assert done.stderr.splitlines() == [
            f"error: cannot listen on 127.0.0.1:{port}: the port is already in use",
            "hint: another process listens there (an earlier genbuf metrics --serve?): give "
            f"--serve another port, or find it with: ss -ltnp 'sport = :{port}'",
        ]
        as_json = embedded.cli("metrics", "--serve", str(port), "--json")
        assert as_json.exit_code == 2
        assert json.loads(as_json.stdout)["error"]["hint"].startswith("another process")
    elsewhere = embedded.cli("metrics", "--serve", str(free_port()), "--bind", "192.0.2.1")
    assert elsewhere.exit_code == 2, elsewhere.output
    error, hint = elsewhere.stderr.splitlines()
    assert error.endswith(": 192.0.2.1 is not an address of this host"), error
    assert hint.startswith("hint: give --bind one of this host's addresses"), hint


def test_serve_answers_metrics_on_its_paths_only(embedded: Stack) -> None:
    """--serve answers /metrics (and /) with the exposition; any other path (a browser's
    /favicon.ico, a typo) is 404, not the metrics or an empty 200."""
    port = free_port()
    process = spawn_genbuf(["metrics", "--serve", str(port)], embedded.env)

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read()

    def listening() -> tuple[int, bytes] | None:
        assert process.poll() is None, "the exporter exited"
        try:
            return get("/metrics")
        except urllib.error.URLError:  # not listening yet
            return None

    try:
        status, body = wait_until(listening, 20, "the exporter to answer a scrape")
        assert status == 200 and b"genbuf_buffers" in body
        root = get("/")
        assert root[0] == 200 and b"genbuf_buffers" in root[1]
        for path in ("/favicon.ico", "/anything", "/metrics/x", "/metricsx"):
            status, body = get(path)
            assert status == 404, path
            assert b"genbuf_buffers" not in body and b"/metrics" in body, path
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_alert_rules_name_only_metrics_genbuf_exposes(embedded: Stack, tmp_path: Path) -> None:
    """deploy/genbuf-alerts.yml uses metric names that genbuf metrics or a job's textfile has."""
    build_fixture(embedded)
    assert embedded.cli("emit-validation-test", "5", "--org", str(ORG)).exit_code == 0
    textfile = tmp_path / "job.prom"
    with job_run(embedded.repository, "compact-pending", textfile=textfile) as run:
        run.finish(clean=True, counts={"compacted": 1})
    exposed = {name for name, _ in samples(embedded.cli("metrics").stdout)}
    exposed |= {name for name, _ in samples(textfile.read_text())}
    exposed |= set(_served(LatestSurvey(_SlowSurvey(), refresh=3600.0)))  # --serve's own
    rules = (REPO_ROOT / "deploy" / "genbuf-alerts.yml").read_text()
    named = set(re.findall(r"\b(genbuf_[a-z_]+)", rules))
    assert named and named <= exposed, named - exposed


def test_chunk_max_len_crossings_are_counted(embedded: Stack) -> None:
    """GENERATION_CHUNK_MAX_LEN: lists over it now (gauge) and compactions over it (counter)."""
    long_one = embedded.repository.create_generation(ORG)
    embedded.buffer.push_many(ORG, long_one, [b"a"] * 5)
    short_one = embedded.repository.create_generation(ORG)
    embedded.buffer.push_many(ORG, short_one, [b"b"] * 2)
    limit = {"GENERATION_CHUNK_MAX_LEN": "3"}
    before = samples(embedded.cli("metrics", env=limit).stdout)
    assert before[("genbuf_buffers_over_max_len", ())] == 1
    assert before[("genbuf_compactions_over_max_len_total", ())] == 0
    for gen in (long_one, short_one):
        assert embedded.cli("compact-generation", str(ORG), str(gen), "--delete").exit_code == 0
    after = samples(embedded.cli("metrics", env=limit).stdout)
    assert after[("genbuf_buffers_over_max_len", ())] == 0
    assert after[("genbuf_compactions_over_max_len_total", ())] == 1


def test_buffers_under_another_prefix_are_a_series_the_alert_fires_on(
    embedded: Stack, tmp_path: Path
) -> None:
    """Under a wrong prefix every gauge reads 0; genbuf_prefix_mismatch says so (and
    genbuf_other_prefix_keys where), and deploy/genbuf-alerts.yml's GenbufWrongPrefix
    fires on it (promtool test rules, with the series metrics printed)."""
    embedded.buffer.client.rpush(
        "laravel_database_app:scenario_planning:org:1:generation:2:chunks", b"x"
    )
    found = samples(embedded.cli("metrics").stdout)
    assert found[("genbuf_prefix_mismatch", ())] == 1
    assert found[("genbuf_other_prefix_keys", (("prefix", "laravel_database_"),))] == 1
    right = samples(embedded.cli("metrics", env={"REDIS_PREFIX": "laravel_database_"}).stdout)
    assert right[("genbuf_prefix_mismatch", ())] == 0
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("CI=true and promtool is not installed (Debian: prometheus)")
        pytest.skip("promtool is not installed (Debian: prometheus)")
    rules = REPO_ROOT / "deploy" / "genbuf-alerts.yml"
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": "genbuf_prefix_mismatch", "values": "0 0 1x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "GenbufWrongPrefix", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "GenbufWrongPrefix",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "genbuf sees no buffer under its REDIS_PREFIX, "
                                    "but the app's wait under another",
                                    "description": "Every other genbuf gauge reads 0 and "
                                    "nothing is compacted: set REDIS_PREFIX (genbuf status "
                                    "names it)",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "rules-test.yml").write_text(json.dumps(test))  # YAML is a superset of JSON
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "rules-test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    checked = subprocess.run([promtool, "check", "rules", str(rules)], check=False)
    assert checked.returncode == 0, checked.stdout


def test_the_alert_rules_know_a_worker_only_deployment(tmp_path: Path) -> None:
    """deploy/genbuf-alerts.yml under promtool: without a compact-pending cron a live
    worker keeps GenbufCompactPendingNotRunning quiet; once no worker is alive (while
    some ran today) it fires with GenbufWorkersDown; a parked event warns."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("CI=true and promtool is not installed (Debian: prometheus)")
        pytest.skip("promtool is not installed (Debian: prometheus)")
    down = {
        "exp_labels": {"severity": "critical"},
        "exp_annotations": {
            "summary": "genbuf workers ran today and none is alive now",
            "description": "Nothing compacts what producers announce: systemctl status "
            "'genbuf-worker@*'; genbuf doctor (workers)",
        },
    }
    not_running = {
        "exp_labels": {"severity": "critical", "job": "compact-pending"},
        "exp_annotations": {
            "summary": "compact-pending has not succeeded for 30 minutes and no genbuf "
            "worker is alive",
            "description": "Check its cron line and log; genbuf doctor says more",
        },
    }
    parked = {
        "exp_labels": {"severity": "warning"},
        "exp_annotations": {
            "summary": "1 malformed compaction events were parked",
            "description": "A producer announced an entry that names no buffer: redis-cli "
            "XRANGE <prefix>app:scenario_planning:compaction-events:parked - +",
        },
    }
    test = {
        "rule_files": [str(REPO_ROOT / "deploy" / "genbuf-alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # no compact-pending since the epoch: a worker-only deployment
                    {
                        "series": 'genbuf_last_success_timestamp_seconds{job="compact-pending"}',
                        "values": "0x60",
                    },
                    {"series": "genbuf_workers_alive", "values": "1x40 0x20"},
                    {"series": "genbuf_workers_known", "values": "1x60"},
                    {"series": "genbuf_worker_events_parked", "values": "0x10 1x50"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "35m",
                        "alertname": "GenbufCompactPendingNotRunning",
                        "exp_alerts": [],
                    },
                    {"eval_time": "35m", "alertname": "GenbufWorkersDown", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "GenbufEventsParked", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "GenbufEventsParked", "exp_alerts": [parked]},
                    {
                        "eval_time": "45m",
                        "alertname": "GenbufCompactPendingNotRunning",
                        "exp_alerts": [not_running],
                    },
                    {"eval_time": "45m", "alertname": "GenbufWorkersDown", "exp_alerts": [down]},
                ],
            }
        ],
    }
    (tmp_path / "rules-test.yml").write_text(json.dumps(test))  # YAML is a superset of JSON
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "rules-test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class _SlowSurvey(Collector):
    """A survey that takes as long as the test says (it waits for ``go``)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.go.set()
        self.calls = 0
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.go.wait(30)
        if self.fail:
            raise RedisUnavailable("Redis is unreachable at redis://x: refused")
        yield GaugeMetricFamily("genbuf_buffer_chunks", "chunks", value=self.calls)


def _served(latest: LatestSurvey) -> dict[str, float]:
    return {s.name: s.value for family in latest.collect() for s in family.samples}


def test_scrapes_are_served_from_the_latest_survey_one_in_flight() -> None:
    """Five concurrent scrapes while a survey is stuck are all answered at once from the
    one before; only one survey runs; its age is exported; a failed survey is one log
    line, the one before is served, genbuf_survey_ok says 0."""
    survey, lines = _SlowSurvey(), []
    latest = LatestSurvey(survey, refresh=0.0, log=lines.append)
    assert survey.calls == 1  # taken before serving
    survey.go.clear()  # the next survey hangs
    with ThreadPoolExecutor(5) as pool:
        started = time.monotonic()
        scrapes = list(pool.map(lambda _: _served(latest), range(5)))
        assert time.monotonic() - started < 5
    assert all(s["genbuf_buffer_chunks"] == 1 for s in scrapes)
    assert survey.calls == 2  # one in flight, however many scrapes came
    assert not latest.wait_idle(0.05)
    survey.go.set()
    assert latest.wait_idle(10)
    after = _served(latest)
    assert after["genbuf_buffer_chunks"] == 2 and after["genbuf_survey_ok"] == 1
    assert 0 <= after["genbuf_survey_age_seconds"] < 10
    assert latest.wait_idle(10)  # the scrape above started survey 3
    survey.fail = True
    _served(latest)  # survey 4 fails
    assert latest.wait_idle(10)
    failed = _served(latest)
    assert failed["genbuf_survey_ok"] == 0 and failed["genbuf_buffer_chunks"] == 3
    assert lines and "survey failed" in lines[0] and "unreachable" in lines[0]


def test_serve_answers_while_redis_is_paused(servers: Stack, tmp_path: Path) -> None:
    """A survey stuck behind a busy Redis (CLIENT PAUSE) does not hold scrapes: each is
    answered within a second from the latest survey, whose age grows; the exporter
    listens on 127.0.0.1 only by default."""
    require_server("redis")
    private = PrivateRedis(tmp_path)
    private.start()
    env = {**servers.env, "REDIS_URL": private.url}
    port = free_port()
    process = spawn_genbuf(["metrics", "--serve", str(port), "--refresh", "1s", "--json"], env)
    # Redis 7.0 holds CLIENT UNPAUSE itself until the pause ends: the admin connection
    # waits up to the whole pause (redis-py's default timeout is 5 s)
    admin = redis.Redis.from_url(private.url, socket_timeout=30)
    try:
        assert process.stdout is not None
        listening = json.loads(process.stdout.readline())
        assert listening["listening"] == f"127.0.0.1:{port}"
        admin.execute_command("CLIENT", "PAUSE", "6000", "ALL")
        ages: list[float] = []

        def five_scrapes_answered() -> bool:  # each within a second, or _scrape fails
            with ThreadPoolExecutor(5) as pool:
                bodies = list(pool.map(lambda _: _scrape(port, timeout=1.0), range(5)))
            ages.extend(samples(body)[("genbuf_survey_age_seconds", ())] for body in bodies)
            return max(ages) > 2

        # the survey in flight waits behind the pause (its age grows), scrapes do not
        wait_until(five_scrapes_answered, 5, lambda: f"a survey older than 2 s: ages {ages}")
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        private.kill()


def _scrape(port: int, timeout: float) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as reply:
        body: str = reply.read().decode()
    return body


class _OneGauge(Collector):
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("genbuf_buffer_chunks", "chunks", value=1)


@pytest.fixture
def bounded_exporter() -> Iterator[int]:
    """An exporter served in this process (its threads counted by the test): at most 4
    connections at once, each with 2 s to send its request; its port."""
    port = free_port()
    server = serve_metrics(_OneGauge(), "127.0.0.1", port, read_timeout=2.0, max_connections=4)
    yield port
    server.shutdown()
    server.server_close()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has answered or closed ``sock`` (readable: data, EOF or reset)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_serve_keeps_its_threads_bounded_however_many_connections_wait(
    bounded_exporter: int,
) -> None:
    """300 idle connections (a thread each, unbounded, before the cap): the exporter
    serves 4 at once and refuses the rest (503, closed); the 4 it serves are dropped once
    they have sent nothing for their read timeout, and a scrape is answered again."""
    port = bounded_exporter
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(300)]
    try:

        def every_connection_handled() -> tuple[int, int] | None:
            refused = sum(map(_closed_by_server, idle))
            threads = threading.active_count() - before
            return (refused, threads) if refused + threads >= len(idle) else None

        refused, threads = wait_until(
            every_connection_handled, 60, "each connection refused or served by a thread"
        )
        assert threads <= 4, f"{threads} threads for {len(idle)} idle connections"
        assert refused >= len(idle) - 4
        answers = [sock.recv(100) for sock in idle[4:] if _closed_by_server(sock)]
        assert any(answer.startswith(b"HTTP/1.0 503 ") for answer in answers)
        # the silent ones are dropped after their read timeout: every socket is closed,
        # and a scrape gets a slot again
        wait_until(lambda: all(map(_closed_by_server, idle)), 60, "the idle ones dropped")

        def scraped() -> str | None:
            try:
                return _scrape(port, timeout=10)
            except OSError:  # (a 503 is an HTTPError, an OSError)
                return None

        assert "genbuf_buffer_chunks 1.0" in wait_until(scraped, 60, "a scrape answered")
        wait_until(lambda: threading.active_count() <= before, 30, "the served threads gone")
    finally:
        for sock in idle:
            sock.close()


def test_serve_drops_a_client_that_trickles_its_request(bounded_exporter: int) -> None:
    """A client that sends a byte of its request every 0.2 s (never silent for as long as
    the read timeout, 2 s) is dropped all the same: the whole request has 2 s to arrive."""
    port = bounded_exporter
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"GET /metrics HTTP/1.0\r\nX-Slow: ")

        def dropped() -> bool:
            if _closed_by_server(slow):
                return True
            try:
                slow.send(b"a")  # one more byte of a header that never ends
            except OSError:  # reset: dropped
                return True
            return False

        wait_until(dropped, 60, "the trickling client dropped", every=0.2)
        with contextlib.suppress(OSError):  # EOF, or a reset
            assert slow.recv(100) == b""


def test_the_help_and_docs_state_the_exporters_limits() -> None:
    """--serve's help (docs/cli.md) and docs/commands.md give the limits the server keeps."""
    limits = (f"{MAX_CONNECTIONS} connections", f"{READ_TIMEOUT:g} s")
    for page in ("cli.md", "commands.md"):
        text = " ".join((REPO_ROOT / "docs" / page).read_text(encoding="utf-8").split())
        assert all(limit in text for limit in limits), page


def test_the_alert_rules_say_when_the_exporter_serves_an_old_survey(tmp_path: Path) -> None:
    """`metrics --serve` whose surveys keep failing (Redis or the database gone, a key of
    another type) serves the last good one for good: workers alive, nothing at risk.
    No rule looked at its age (month-long run: a wrong-typed key kept it failing
    unseen). GenbufMetricsStale fires once the survey served is over 15 minutes old."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("CI=true and promtool is not installed (Debian: prometheus)")
        pytest.skip("promtool is not installed (Debian: prometheus)")
    stale = {
        "exp_labels": {"severity": "warning"},
        "exp_annotations": {
            "summary": "genbuf metrics --serve serves a survey 1290 s old",
            "description": "Its surveys fail (see its log: 'survey failed'): every genbuf "
            "gauge is that old; genbuf status says why",
        },
    }
    minutes = ["30"] * 5 + [str(30 + 60 * n) for n in range(1, 26)]  # failing from 5m on
    test = {
        "rule_files": [str(REPO_ROOT / "deploy" / "genbuf-alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": "genbuf_survey_age_seconds", "values": " ".join(minutes)},
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "GenbufMetricsStale", "exp_alerts": []},
                    {"eval_time": "18m", "alertname": "GenbufMetricsStale", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "GenbufMetricsStale", "exp_alerts": [stale]},
                ],
            }
        ],
    }
    (tmp_path / "rules-test.yml").write_text(json.dumps(test))  # YAML is a superset of JSON
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "rules-test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
