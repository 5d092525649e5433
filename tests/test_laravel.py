"""Beside a Laravel app: its .env, its key prefix, its tables, and a real PHP producer.

The PHP scripts in tests/php/ use phpredis and PDO the way the Laravel code does;
php-cli with the redis and pgsql extensions comes from Debian's packages
(.ci/run installs them).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from genbuffer.redis import GenerationBuffer
from tests.conftest import require_server
from tests.support.clock import let_time_pass
from tests.support.runner import run_genbuf
from tests.support.urls import IN_CI, REDIS_TEST_URL, REPO_ROOT

PHP_DIR = REPO_ROOT / "tests" / "php"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "laravel_pgsql.sql"


def require_php() -> None:
    """Skip (fail under CI) unless php has the redis and pdo_pgsql extensions."""
    php = shutil.which("php")
    modules = (
        subprocess.run([php, "-m"], capture_output=True, text=True, check=False).stdout.split()
        if php
        else []
    )
    missing = [m for m in ("redis", "pdo_pgsql") if m not in modules]
    if php and not missing:
        return
    reason = "php-cli is not installed" if not php else f"php lacks {', '.join(missing)}"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"{reason} (apt-get install php-cli php-redis php-pgsql)")


@pytest.fixture
def laravel_database(empty_pg_database: str) -> str:
    """A PostgreSQL database holding the tables and rows a Laravel app created."""
    url = make_url(empty_pg_database)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    ) as conn:
        conn.execute(FIXTURE.read_text())
    return empty_pg_database


def _env_file(tmp_path: Path, database_url: str, **extra: str) -> Path:
    """A Laravel .env for this database and the test Redis."""
    url = make_url(database_url)
    redis_url = redis.connection.parse_url(REDIS_TEST_URL)
    lines = {
        "APP_NAME": "Laravel",
        "APP_ENV": "production",
        "REDIS_CLIENT": "phpredis",
        "REDIS_HOST": str(redis_url.get("host", "127.0.0.1")),
        "REDIS_PASSWORD": "null",
        "REDIS_PORT": str(redis_url.get("port", 6379)),
        "DB_CONNECTION": "pgsql",
        "DB_HOST": str(url.host),
        "DB_PORT": str(url.port or 5432),
        "DB_DATABASE": str(url.database),
        "DB_USERNAME": str(url.username),
        "DB_PASSWORD": "",
        "METADATA_VALIDATION_LOG": str(tmp_path / "audit.log"),
        **extra,
    }
    path = tmp_path / ".env"
    path.write_text("".join(f"{key}={json.dumps(value)}\n" for key, value in lines.items()))
    return path


def _genbuf(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_genbuf(["--env-file", str(env_file), *args])


def _rows(database_url: str) -> dict[int, tuple[object, ...]]:
    url = make_url(database_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as c:
        return {
            row[0]: row[1:]
            for row in c.execute(
                "SELECT id, organization_id, scenario_id, status, prompt, metadata::text, "
                "created_at FROM scenario_generations ORDER BY id"
            )
        }


@pytest.fixture
def scrub_redis() -> Iterator[list[str]]:
    """Prefixes whose keys are removed from the test Redis afterwards."""
    require_server("redis")
    prefixes: list[str] = []
    yield prefixes
    client = redis.Redis.from_url(REDIS_TEST_URL)
    for prefix in prefixes:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)


def test_db_upgrade_adopts_a_laravel_schema(laravel_database: str, tmp_path: Path) -> None:
    """db check exits 1 on the Laravel tables; db upgrade adds what is missing and keeps
    every row and column; db check then passes, and the legacy blob can be migrated."""
    env = _env_file(tmp_path, laravel_database)
    before = _rows(laravel_database)
    check = _genbuf(env, "db", "check", "--json")
    assert check.returncode == 1, check.stderr
    missing = {
        (p["table"], p["column"])
        for p in json.loads(check.stdout)["problems"]
        if p["severity"] == "error"
    }
    assert ("scenario_generations", "compacted") in missing
    assert ("generation_chunks", None) in missing

    upgrade = _genbuf(env, "db", "upgrade", "--json")
    assert upgrade.returncode == 0, upgrade.stderr
    assert _rows(laravel_database) == before  # rows and unknown columns untouched
    after = _genbuf(env, "db", "check", "--json")
    assert after.returncode == 0, after.stdout
    notes = [p["message"] for p in json.loads(after.stdout)["problems"]]
    assert any("jsonb" in note for note in notes)

    url = make_url(laravel_database)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as c:
        assert c.execute("SELECT count(*) FROM migrations").fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM metadata_validation_issues").fetchone() == (1,)
    moved = _genbuf(env, "migrate-compacted-from-metadata", "--json")
    assert json.loads(moved.stdout)["migrated"] == 1
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as c:
        compacted, metadata = c.execute(
            "SELECT compacted, metadata::jsonb FROM scenario_generations WHERE id = 101"
        ).fetchone()
    assert base64.b64decode(compacted) == b'{"a": 1}'
    assert metadata == {"chunk_count": 3, "compacted_at": "2025-06-01T10:00:00Z", "note": "legacy"}


CHUNKS = [
    b'{"plan": "Lisboa ',
    "ñ".encode()[:1],
    "ñ".encode()[1:] + b" \xf0\x9f",
    b"\x9a\x80",
    b'",\n "steps": [1, 2]}\n',
]


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "mode"), [("underscore", "meta"), ("hyphen", "nometa")])
@pytest.mark.php
def test_php_producer_compacted_by_genbuf_and_read_back_by_php(
    laravel_database: str, tmp_path: Path, scrub_redis: list[str], rule: str, mode: str
) -> None:
    """PHP pushes with Laravel's prefix; genbuf (--env-file) compacts byte-exact into
    PostgreSQL and deletes the keys; PHP reads the row back and decodes the same bytes."""
    require_php()
    app_name = f"Genbuf Test {uuid.uuid4().hex[:8]}"
    env = _env_file(tmp_path, laravel_database, APP_NAME=app_name, REDIS_PREFIX_RULE=rule)
    assert _genbuf(env, "db", "upgrade").returncode == 0
    slug = app_name.lower().replace(" ", "_" if rule == "underscore" else "-")
    prefix = f"{slug}_database_" if rule == "underscore" else f"{slug}-database-"
    scrub_redis.append(prefix)

    chunks_file = tmp_path / "chunks.b64"
    chunks_file.write_text("".join(base64.b64encode(c).decode() + "\n" for c in CHUNKS))
    key = _php_produce(prefix, 102, "-", mode, chunks_file)
    assert key == f"{prefix}app:scenario_planning:org:12:generation:102:chunks"

    inspected = json.loads(_genbuf(env, "inspect-generation", "12", "102", "--json").stdout)
    assert inspected["keys"][0]["key"] == key  # the prefix applied once
    done = _genbuf(env, "compact-generation", "12", "102", "--delete", "--soft", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["deleted"] and result["chunk_count"] == len(CHUNKS)
    assert not [i for i in result["issues"] if i["code"] == "chunk_count_mismatch"]
    assert (
        json.loads(_genbuf(env, "inspect-generation", "12", "102", "--json").stdout)["keys"] == []
    )

    url = make_url(laravel_database)
    read = subprocess.run(
        [
            "php",
            str(PHP_DIR / "read_compacted.php"),
            str(url.host),
            str(url.port or 5432),
            str(url.database),
            str(url.username),
            "102",
        ],
        capture_output=True,
        check=True,
    )
    assert read.stdout == b"".join(CHUNKS)


def _php_produce(prefix: str, gen: int, scenario: str, mode: str, chunks_file: Path) -> str:
    """Run the PHP producer; the key it wrote (prefix included)."""
    redis_url = redis.connection.parse_url(REDIS_TEST_URL)
    return run_php(
        "producer.php",
        str(redis_url.get("host", "127.0.0.1")),
        str(redis_url.get("port", 6379)),
        prefix,
        "12",
        str(gen),
        scenario,
        "3600",
        mode,
        str(chunks_file),
    )[0]


def run_php(script: str, *args: str) -> list[str]:
    """Run ``tests/php/SCRIPT ARGS``; the lines it printed (a failure raises)."""
    done = subprocess.run(
        ["php", str(PHP_DIR / script), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.php
def test_php_plain_producers_are_all_compacted_by_the_cron_line(
    laravel_database: str, tmp_path: Path, scrub_redis: list[str]
) -> None:
    """The app's own producers: a list without meta hash, a list with only the counter,
    and a key without the scenario its row has. The cron line of docs/operations.md compacts all
    three byte-exact and removes the buffers, exit 0; with REDIS_PREFIX missing from the
    .env it exits 1 naming the prefix."""
    require_php()
    prefix = f"genbuf_cron_{uuid.uuid4().hex[:8]}_database_"
    scrub_redis.append(prefix)
    env = _env_file(tmp_path, laravel_database, REDIS_PREFIX=prefix)
    assert _genbuf(env, "db", "upgrade").returncode == 0
    url = make_url(laravel_database)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    ) as c:
        c.execute(
            "INSERT INTO scenario_generations (id, organization_id, scenario_id) "
            "VALUES (103, 12, NULL), (104, 12, NULL), (105, 12, 345)"
        )
    chunks_file = tmp_path / "chunks.b64"
    chunks_file.write_text("".join(base64.b64encode(c).decode() + "\n" for c in CHUNKS))
    wrote = [
        _php_produce(prefix, 103, "-", "nometa", chunks_file),
        _php_produce(prefix, 104, "-", "counter", chunks_file),
        _php_produce(prefix, 105, "-", "meta", chunks_file),  # its row has scenario 345
    ]
    unprefixed = tmp_path / "no-prefix.env"
    unprefixed.write_text(
        "".join(ln + "\n" for ln in env.read_text().splitlines() if "REDIS_PREFIX" not in ln)
    )
    wrong = _genbuf(unprefixed, "compact-pending", "--idle", "2s", "--json")
    assert wrong.returncode == 1 and f"REDIS_PREFIX={prefix}" in wrong.stderr, wrong.stderr

    # the cron line twice, ten minutes apart: a list without `last_chunk_at` is idle
    # --idle after the run that first saw it at its final length (genbuffer.engine.idleness)
    app = GenerationBuffer(redis.Redis.from_url(REDIS_TEST_URL), prefix=prefix)
    runs = []
    for pause in (timedelta(minutes=10), None):
        done = _genbuf(env, "compact-pending", "--idle", "5m", "--json")
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
        for key in wrote if pause else ():
            let_time_pass(app, key, pause)
    assert runs[0]["buffers"] == 3 and runs[0]["compacted"] == 0, runs
    assert runs[1]["compacted"] == 3 and not any(r["failed"] for r in runs), runs
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as c:
        stored = dict(
            c.execute(
                "SELECT id, compacted FROM scenario_generations WHERE id IN (103, 104, 105)"
            ).fetchall()
        )
    assert {gen: base64.b64decode(blob) for gen, blob in stored.items()} == dict.fromkeys(
        (103, 104, 105), b"".join(CHUNKS)
    )
    client = redis.Redis.from_url(REDIS_TEST_URL)
    assert [client.exists(key, key + ":meta") for key in wrote] == [0, 0, 0]
