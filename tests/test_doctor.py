"""genbuf doctor: healthy, a Redis that can lose chunks, outages, schema, cron, prefix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from genbuffer.cli import app
from tests.conftest import Stack, require_server
from tests.support.runner import run_genbuf
from tests.support.servers import PrivateRedis, free_port

ORG = 73


def checks(stdout: str) -> dict[str, dict[str, Any]]:
    """The --json document's checks by name."""
    return {check["name"]: check for check in json.loads(stdout)["checks"]}


def test_healthy_servers(servers: Stack) -> None:
    """Every check runs; nothing fails on the test servers (persistence off: a warning)."""
    servers.buffer.push_chunk(ORG, 1, b"x")
    done = run_genbuf(["doctor", "--json"], servers.env)
    assert done.returncode == 0, done.stdout + done.stderr
    found = checks(done.stdout)
    assert set(found) == {
        "redis",
        "eviction",
        "persistence",
        "prefix",
        "database",
        "schema",
        "cron compact-pending",
        "cron purge-chunks",
        "job exclusion",
        "job leases",
        "audit log",
        "clock",
    }
    assert found["redis"]["status"] == "ok" and "Redis 7" in found["redis"]["message"]
    assert found["schema"]["status"] == "ok" and found["clock"]["status"] == "ok"
    assert found["cron compact-pending"]["status"] == "warn"  # never run yet
    human = run_genbuf(["doctor"], servers.env)
    assert human.returncode == 0 and "ok   redis:" in human.stdout, human.stdout


@pytest.fixture
def lossy_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis that evicts any key when full and keeps nothing on disk."""
    require_server("redis")
    server = PrivateRedis(tmp_path, "--appendonly", "no", "--maxmemory-policy", "allkeys-lru")
    server.start()
    yield server
    server.kill()


def test_a_redis_that_can_lose_chunks_fails(servers: Stack, lossy_redis: PrivateRedis) -> None:
    """allkeys-lru: fail with a hint (exit 1); no AOF nor RDB: a warning."""
    env = {**servers.env, "REDIS_URL": lossy_redis.url}
    done = run_genbuf(["doctor", "--json"], env)
    assert done.returncode == 1, done.stdout
    found = checks(done.stdout)
    assert found["eviction"]["status"] == "fail" and "allkeys-lru" in found["eviction"]["message"]
    assert "noeviction" in found["eviction"]["hint"]
    assert found["persistence"]["status"] == "warn"
    assert not json.loads(done.stdout)["ok"]


def test_unreachable_dependencies_exit_3(servers: Stack) -> None:
    """Redis or the database down: that check fails, the command exits 3."""
    redis_down = {**servers.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = run_genbuf(["doctor", "--json"], redis_down)
    assert done.returncode == 3 and json.loads(done.stdout)["unreachable"] == ["redis"]
    assert "eviction" not in checks(done.stdout)  # not run without Redis
    db_down = {**servers.env, "DATABASE_URL": f"postgresql://x@127.0.0.1:{free_port()}/x"}
    done = run_genbuf(["doctor", "--json"], db_down)
    assert done.returncode == 3 and json.loads(done.stdout)["unreachable"] == ["database"]
    assert checks(done.stdout)["database"]["status"] == "fail"


def test_schema_not_current_fails_with_the_upgrade_hint(
    servers: Stack, empty_pg_database: str
) -> None:
    """An empty database: the schema check fails and says `genbuf db upgrade`."""
    done = run_genbuf(["doctor", "--json"], {**servers.env, "DATABASE_URL": empty_pg_database})
    assert done.returncode == 1
    schema = checks(done.stdout)["schema"]
    assert schema["status"] == "fail" and schema["hint"] == "genbuf db upgrade"


def test_stale_cron_job_fails(stack: Stack) -> None:
    """A last success older than --cron-max-age fails; a fresh one is ok."""
    observations = stack.repository.observations
    long_ago = datetime.now(UTC) - timedelta(hours=3)
    observations.record_job_run(
        "compact-pending", ok=True, started_at=long_ago, finished_at=long_ago, summary={}
    )
    now = datetime.now(UTC)
    observations.record_job_run(
        "purge-chunks", ok=True, started_at=now, finished_at=now, summary={}
    )
    stale = stack.cli("doctor", "--json", "--cron-max-age", "1h")
    assert stale.exit_code == 1, stale.output
    found = checks(stale.stdout)
    assert found["cron compact-pending"]["status"] == "fail"
    assert found["cron purge-chunks"]["status"] == "ok"
    relaxed = checks(stack.cli("doctor", "--json", "--cron-max-age", "4h").stdout)
    assert relaxed["cron compact-pending"]["status"] == "ok"


def test_buffers_under_another_prefix_fail_the_prefix_check(embedded: Stack) -> None:
    """No buffer under the configured prefix, some under another: fail, naming it."""
    embedded.buffer.client.rpush(
        "laravel_database_app:scenario_planning:org:1:generation:2:chunks", b"x"
    )
    done = embedded.cli("doctor", "--json")
    prefix = checks(done.stdout)["prefix"]
    assert prefix["status"] == "fail" and prefix["hint"] == "set REDIS_PREFIX=laravel_database_"
    assert done.exit_code == 1
    # the in-process Redis refuses CONFIG and INFO: unknown, said as a warning
    assert checks(done.stdout)["eviction"]["status"] == "warn"


def test_an_audit_log_that_cannot_be_written_fails(embedded: Stack, tmp_path: Path) -> None:
    """METADATA_VALIDATION_LOG under a regular file cannot be created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = embedded.cli(
        "doctor", "--json", env={"METADATA_VALIDATION_LOG": str(blocker / "logs" / "x.log")}
    )
    assert checks(done.stdout)["audit log"]["status"] == "fail" and done.exit_code == 1


def test_doctor_creates_no_database_it_only_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor without a .env (the embedded SQLite default) or with a SQLite file that
    does not exist: the database check fails saying so, with a hint, and neither the
    file nor its storage/ folder is created (exit 3, like any database not there)."""
    monkeypatch.chdir(tmp_path)
    unset = dict.fromkeys(("DATABASE_URL", "DB_CONNECTION", "DB_DATABASE", "GENBUF_ENV_FILE"))
    env = {**unset, "REDIS_URL": "memory://doctor", "METADATA_VALIDATION_LOG": "audit.log"}
    done = CliRunner().invoke(app, ["doctor", "--json"], env=env, catch_exceptions=False)
    database = checks(done.stdout)["database"]
    assert database["status"] == "fail" and done.exit_code == 3, done.output
    wanted = tmp_path / "storage" / "genbuffer.sqlite3"
    assert f"{wanted} does not exist" in database["message"]
    assert "genbuf db upgrade" in database["hint"] and "DATABASE_URL" in database["hint"]
    assert not (tmp_path / "storage").exists()
    named = tmp_path / "data" / "app.sqlite3"
    env["DATABASE_URL"] = f"sqlite:///{named}"
    again = CliRunner().invoke(app, ["doctor"], env=env, catch_exceptions=False)
    assert again.exit_code == 3 and f"{named} does not exist" in again.stdout, again.output
    assert not named.parent.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["metrics"],
        ["db", "check"],
        ["validation-report"],
        ["show-generation", "1", "1"],
        ["compact-pending"],
        ["purge-chunks"],
    ],
    ids=" ".join,
)
def test_no_command_but_db_upgrade_creates_a_sqlite_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A SQLite file that does not exist is exit 3 naming it (db upgrade creates it),
    never an empty file left behind by a command that then fails for want of tables."""
    monkeypatch.chdir(tmp_path)
    named = tmp_path / "data" / "app.sqlite3"
    env = {
        "DATABASE_URL": f"sqlite:///{named}",
        "GENBUF_ENV_FILE": None,
        "REDIS_URL": "memory://no-database",
        "METADATA_VALIDATION_LOG": "audit.log",
    }
    done = CliRunner().invoke(app, command, env=env, catch_exceptions=False)
    assert done.exit_code == 3, done.output
    assert f"{named} does not exist" in done.output
    assert not named.parent.exists()
    made = CliRunner().invoke(app, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert made.exit_code == 0 and named.exists(), made.output
