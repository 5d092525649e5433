"""The Laravel package (php/) under Debian's phpunit, against this session's private
redis-server and fresh PostgreSQL databases, with the installed genbuf.

php/tests/ (phpunit) pushes from PHP through genbuf's own Lua scripts with phpredis and
predis, compacts with genbuf (compact-generation, and a real `genbuf worker`), hears the
completion event in a Laravel listener, reads artifacts back (base64 and a local-disk
offloaded object) and runs `genbuf db laravel-migration` through Laravel's migrator
before `genbuf db check`. The phpunit summary and the versions it ran with are printed
at the end of the pytest run (SUMMARY_LINES).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import SUMMARY_LINES, Stack, require_server
from tests.support.runner import GENBUF, clean_environ
from tests.support.urls import IN_CI, REDIS_TEST_URL, REPO_ROOT
from tests.test_laravel import require_php

PHP_PACKAGE = REPO_ROOT / "php"
VERSIONS = (
    "echo 'Laravel ', (new Illuminate\\Foundation\\Application)->version(), ', phpredis ', "
    "phpversion('redis'), ', predis ', Predis\\Client::VERSION, ', PHP ', PHP_VERSION;"
)


def require_phpunit() -> str:
    """Debian's phpunit and predis (skip, or fail under CI, without them)."""
    phpunit = shutil.which("phpunit")
    missing = [] if phpunit else ["phpunit"]
    if not Path("/usr/share/php/Predis/autoload.php").exists():
        missing.append("php-nrk-predis")
    if not missing and phpunit:
        return phpunit
    reason = f"{', '.join(missing)} not installed"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"{reason} (apt-get install phpunit php-nrk-predis)")


@pytest.fixture
def php_prefix() -> Iterator[str]:
    """A key prefix of this test on the test Redis; its keys are removed afterwards."""
    prefix = f"gbphp{uuid.uuid4().hex[:10]}_"
    yield prefix
    client = redis.Redis.from_url(REDIS_TEST_URL)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)
    client.close()


@pytest.mark.slow
@pytest.mark.redis_server
@pytest.mark.php
def test_php_package_phpunit_suite(
    pg_database: str, empty_pg_database: str, php_prefix: str, tmp_path: Path
) -> None:
    """phpunit -c php/phpunit.xml.dist passes, with nothing skipped but the zstd case on
    a PHP that has the zstd extension."""
    require_server("redis")
    require_php()
    phpunit = require_phpunit()
    url = make_url(pg_database)
    store = tmp_path / "objects"
    store.mkdir()
    env_file = tmp_path / "genbuf.env"
    env_file.write_text(
        f"REDIS_URL={REDIS_TEST_URL}\n"
        f"REDIS_PREFIX={php_prefix}\n"
        f"DATABASE_URL={pg_database}\n"
        f"METADATA_VALIDATION_LOG={tmp_path / 'audit.log'}\n"
        f"GENERATION_OFFLOAD_URL=file://{store}\n"
    )
    redis_url = redis.connection.parse_url(REDIS_TEST_URL)
    env = clean_environ(
        {
            "GENBUF_BIN": GENBUF,
            "GENBUF_ENV_FILE": str(env_file),
            "GENBUF_TEST_DB_HOST": str(url.host),
            "GENBUF_TEST_DB_PORT": str(url.port or 5432),
            "GENBUF_TEST_DB_DATABASE": str(url.database),
            "GENBUF_TEST_DB_USERNAME": str(url.username),
            "GENBUF_TEST_FRESH_DB": str(make_url(empty_pg_database).database),
            "GENBUF_TEST_REDIS_HOST": str(redis_url.get("host", "127.0.0.1")),
            "GENBUF_TEST_REDIS_PORT": str(redis_url.get("port", 6379)),
            "GENBUF_TEST_PREFIX": php_prefix,
            "GENBUF_TEST_STORE_DIR": str(store),
            "TMPDIR": str(tmp_path),
        }
    )
    # the cluster group: test_php_package_on_a_redis_cluster
    run, summary = _phpunit(phpunit, tmp_path, env, "--exclude-group", "cluster")
    versions = subprocess.run(
        [
            "php",
            "-d",
            "include_path=/usr/share/php",
            "-r",
            "require 'Illuminate/autoload.php'; require 'Predis/autoload.php'; " + VERSIONS,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    skipped = re.search(r"Skipped: (\d+)", run.stdout)
    assert skipped is None or int(skipped.group(1)) <= 1, run.stdout  # zstd, with the extension
    SUMMARY_LINES.append(f"phpunit (php/): {summary} [{versions}]")


@pytest.mark.slow
@pytest.mark.php
def test_php_package_on_a_redis_cluster(cluster: Stack, tmp_path: Path) -> None:
    """phpunit --group cluster (php/tests/ClusterTest.php) against this session's Redis
    Cluster with GENERATION_KEY_TAGS=true: phpredis RedisCluster pushes (a retried
    sequenced push not duplicated) and finishes, `genbuf compact-pending` compacts
    byte-exact, genbuf:listen dispatches GenerationCompacted; predis on a cluster is
    refused naming phpredis."""
    require_php()
    phpunit = require_phpunit()
    url = make_url(cluster.env["DATABASE_URL"])
    env_file = tmp_path / "genbuf-cluster.env"
    env_file.write_text(
        "".join(f"{name}={value}\n" for name, value in cluster.env.items())
        + "GENERATION_KEY_TAGS=true\n"
    )
    env = clean_environ(
        {
            "GENBUF_BIN": GENBUF,
            "GENBUF_ENV_FILE": str(env_file),
            "GENBUF_TEST_DB_HOST": str(url.host),
            "GENBUF_TEST_DB_PORT": str(url.port or 5432),
            "GENBUF_TEST_DB_DATABASE": str(url.database),
            "GENBUF_TEST_DB_USERNAME": str(url.username),
            # the single-node settings Support::app() reads (unused by this group)
            "GENBUF_TEST_REDIS_HOST": "127.0.0.1",
            "GENBUF_TEST_REDIS_PORT": "1",
            "GENBUF_TEST_PREFIX": cluster.env["REDIS_PREFIX"],
            "GENBUF_TEST_STORE_DIR": str(tmp_path),
            "GENBUF_TEST_CLUSTER_NODES": cluster.env["REDIS_CLUSTER_NODES"],
            "GENBUF_TEST_CLUSTER_PREFIX": cluster.env["REDIS_PREFIX"],
            "GENBUF_TEST_CLUSTER_ENV_FILE": str(env_file),
            "TMPDIR": str(tmp_path),
        }
    )
    run, summary = _phpunit(phpunit, tmp_path, env, "--group", "cluster")
    assert "Skipped" not in run.stdout, run.stdout
    assert re.match(r"OK \(2 tests", summary), run.stdout
    SUMMARY_LINES.append(f"phpunit (php/, Redis Cluster): {summary}")


def _phpunit(
    phpunit: str, tmp_path: Path, env: dict[str, str], *selection: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the package's phpunit suite (``selection``: its group options), which must
    pass; the run and its summary line (``OK (…)`` or ``Tests: …``)."""
    run = subprocess.run(
        [phpunit, "-c", str(PHP_PACKAGE / "phpunit.xml.dist"), *selection],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = [line for line in run.stdout.splitlines() if re.match(r"^(OK|Tests:)", line)]
    assert summary, run.stdout
    return run, summary[-1]
