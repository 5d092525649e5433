"""genbuf metrics: the exposition parses, counters come from the database (monotonic
across processes), cron runs write their textfile, and --serve serves."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from genbuffer.jobs import job_run
from tests.conftest import Stack
from tests.support.runner import run_genbuf, spawn_genbuf
from tests.support.servers import free_port
from tests.support.urls import REPO_ROOT
from tests.test_status import ORG, build_fixture

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
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
    """--serve is an exporter: each scrape surveys anew; SIGTERM stops it with exit 0."""
    port = free_port()
    process = spawn_genbuf(["metrics", "--serve", str(port)], servers.env)
    try:
        body = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    body = reply.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert samples(body)[("genbuf_buffers", (("state", "finished"),))] == 0
        servers.buffer.push_chunk(ORG, 5, b"x")
        servers.buffer.finish(ORG, 5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            again = samples(reply.read().decode())
        assert again[("genbuf_buffers", (("state", "orphaned"),))] == 1
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
