"""Fixtures that choose the backend: embedded (fakeredis + SQLite), the real servers, a
real Redis Cluster started by the tests, or PostgreSQL through a real PgBouncer in
transaction mode started by the tests (``pooled``).

The same tests run on both. A test that needs a real server skips, with the
reason, when the server is absent, except under CI=true, where it fails.
Every test gets its own Redis key prefix (or fakeredis server) and its own
database, and removes them afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from genbuffer.cli import app
from genbuffer.compaction import CompactionConfig
from genbuffer.db.repository import Repository
from genbuffer.db.upgrade import upgrade
from genbuffer.redis import GenerationBuffer
from genbuffer.runtime import Runtime
from genbuffer.settings import Settings
from tests.support.cluster import LocalCluster
from tests.support.objects import S3Server
from tests.support.pooler import PgBouncer, pgbouncer_binary
from tests.support.urls import (
    IN_CI,
    MARIADB_ADMIN_URL,
    POSTGRES_ADMIN_URL,
    pg_url,
    redis_test_url,
)

_reachable: dict[str, str | None] = {}


def _probe(name: str) -> str | None:
    """None if the server answers, else why not (probed once per session)."""
    if name not in _reachable:
        try:
            if name == "redis":
                redis.Redis.from_url(redis_test_url(), socket_connect_timeout=2).ping()
            elif name == "mariadb":
                _mariadb_admin().close()
            else:
                psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
            _reachable[name] = None
        except Exception as exc:  # any failure means: not reachable
            _reachable[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _reachable[name]


def require_server(name: str) -> None:
    """Skip (fail under CI) unless the real server ``name`` (redis, postgres, mariadb) answers."""
    reason = _probe(name)
    if reason is None:
        return
    redis_target = os.environ.get("REDIS_TEST_URL", "a private redis-server")
    target = {"redis": redis_target, "mariadb": MARIADB_ADMIN_URL}.get(name, POSTGRES_ADMIN_URL)
    message = f"{name} is not reachable at {target} ({reason})"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def _mariadb_admin() -> Any:
    import pymysql  # noqa: PLC0415  (an optional driver)

    url = make_url(MARIADB_ADMIN_URL)
    return pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        connect_timeout=3,
        autocommit=True,
    )


@pytest.fixture
def empty_mariadb_database() -> Iterator[str]:
    """An empty MariaDB database, dropped afterwards; its URL."""
    require_server("mariadb")
    name = f"genbuf_m_{uuid.uuid4().hex[:12]}"
    admin = _mariadb_admin()
    admin.cursor().execute(f"CREATE DATABASE `{name}`")
    yield str(make_url(MARIADB_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture
def mariadb_database(empty_mariadb_database: str) -> str:
    """A fresh migrated MariaDB database for one test; its URL."""
    repository = Repository.from_settings(Settings(database_url=empty_mariadb_database))
    upgrade(repository.engine, repository.url)
    repository.engine.dispose()
    return empty_mariadb_database


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, created once; each test copies it."""
    require_server("postgres")
    name = f"genbuf_tpl_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    repository = Repository.from_settings(Settings(database_url=pg_url(name)))
    upgrade(repository.engine, repository.url)
    repository.engine.dispose()
    yield name
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for one test; its URL."""
    name = f"genbuf_t_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield pg_url(name)
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """An empty PostgreSQL database (no template), dropped afterwards."""
    require_server("postgres")
    name = f"genbuf_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_url(name)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix on the real Redis owned by one test; its keys are removed afterwards."""
    require_server("redis")
    prefix = f"genbuf-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_test_url())
    for key in client.scan_iter(match=prefix.replace(":", r"\:") + "*", count=1000):
        client.delete(key)
    client.close()


def require_pgbouncer() -> None:
    """Skip (fail under CI) unless Debian's pgbouncer is installed."""
    if pgbouncer_binary() is None:
        message = "pgbouncer is not installed (Debian's pgbouncer package; .ci/run installs it)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test PostgreSQL, for the whole
    session, on a free loopback port (every database name passed through)."""
    require_server("postgres")
    require_pgbouncer()
    admin = make_url(POSTGRES_ADMIN_URL)
    bouncer = PgBouncer(
        upstream_host=admin.host or "127.0.0.1",
        upstream_port=admin.port or 5432,
        users=(admin.username or "postgres",),
    ).start()
    yield bouncer
    bouncer.stop()


def require_cluster_binaries() -> None:
    """Skip (fail under CI) unless redis-server and redis-cli are installed."""
    import shutil  # noqa: PLC0415

    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        message = f"a Redis Cluster needs {', '.join(missing)}, which is not installed"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real 3-primary Redis Cluster on loopback ports, for the whole session."""
    require_cluster_binaries()
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_prefix(redis_cluster: LocalCluster) -> Iterator[str]:
    """A key prefix on the cluster owned by one test; its keys (on every primary, and
    genbuf's own ``{K}:genbuf`` hashes) are removed afterwards."""
    prefix = f"genbuf-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    escaped = prefix.replace(":", r"\:")
    for pattern in (escaped + "*", "{" + escaped + "*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    client.close()


def _cluster_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    cluster = request.getfixturevalue("redis_cluster")
    return {
        "REDIS_CLUSTER_NODES": cluster.nodes,
        "REDIS_PREFIX": request.getfixturevalue("cluster_prefix"),
        "DATABASE_URL": request.getfixturevalue("pg_database"),
        "METADATA_VALIDATION_LOG": str(tmp_path / "logs" / "metadata-validation.log"),
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The backends of ``stack``; a module with ``ON_CLUSTER = True`` adds the cluster,
    one with ``ON_POOLER = True`` PostgreSQL through PgBouncer in transaction mode, and
    ``@pytest.mark.backends("servers", …)`` keeps those named only."""
    if "stack" in metafunc.fixturenames:
        backends = ["embedded", "servers", "mariadb"]
        if getattr(metafunc.module, "ON_CLUSTER", False):
            backends.append("cluster")
        if getattr(metafunc.module, "ON_POOLER", False):
            backends.append("pooled")
        if (only := metafunc.definition.get_closest_marker("backends")) is not None:
            backends = [name for name in backends if name in only.args]
        metafunc.parametrize("stack", backends, indirect=True)


@dataclass
class Stack:
    """Settings, adapters and a CLI runner bound to one backend."""

    name: str
    env: dict[str, str]
    tmp_path: Path
    _runtime: Runtime | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """Settings read from this stack's environment."""
        return Settings(**{key.lower(): value for key, value in self.env.items()})

    @property
    def runtime(self) -> Runtime:
        """One shared Runtime (connections reused across a test)."""
        if self._runtime is None:
            self._runtime = Runtime(settings=self.settings)
        return self._runtime

    @property
    def buffer(self) -> GenerationBuffer:
        """The buffer adapter."""
        return self.runtime.buffer

    @property
    def repository(self) -> Repository:
        """The repository adapter."""
        return self.runtime.repository

    def config(self, **overrides: Any) -> CompactionConfig:
        """Compaction config from settings, with overrides."""
        base = CompactionConfig.from_settings(self.settings)
        return CompactionConfig(**{**vars(base), **overrides})

    @property
    def audit_log(self) -> Path:
        """The JSONL audit log path."""
        return Path(self.env["METADATA_VALIDATION_LOG"])

    def cli(
        self, *args: str, input: bytes | str | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        """Run genbuf in-process with this stack's environment."""
        return CliRunner().invoke(
            app, list(args), input=input, env={**self.env, **(env or {})}, catch_exceptions=False
        )

    def close(self) -> None:
        """Release connections."""
        if self._runtime is not None and "repository" in vars(self._runtime):
            self._runtime.repository.engine.dispose()
        if self._runtime is not None and "buffer" in vars(self._runtime):
            self._runtime.buffer.close()


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": f"memory://{uuid.uuid4().hex}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'genbuffer.sqlite3'}",
        "METADATA_VALIDATION_LOG": str(tmp_path / "logs" / "metadata-validation.log"),
    }


def _servers_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": redis_test_url(),
        "REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        "DATABASE_URL": request.getfixturevalue("pg_database"),
        "METADATA_VALIDATION_LOG": str(tmp_path / "logs" / "metadata-validation.log"),
    }


def _pooled_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The real Redis, and the test's PostgreSQL database through PgBouncer."""
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
    env = _servers_env(request, tmp_path)
    env["DATABASE_URL"] = bouncer.url(env["DATABASE_URL"])
    return env


def _embedded_stack(tmp_path: Path) -> Stack:
    env = _embedded_env(tmp_path)
    repository = Repository.from_settings(Settings(database_url=env["DATABASE_URL"]))
    upgrade(repository.engine, repository.url)
    repository.engine.dispose()
    return Stack(name="embedded", env=env, tmp_path=tmp_path)


@pytest.fixture  # its backends: pytest_generate_tests
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """The same test on fakeredis + SQLite, the real Redis + PostgreSQL, fakeredis + MariaDB."""
    if request.param == "embedded":
        built = _embedded_stack(tmp_path)
    elif request.param == "mariadb":
        env = _embedded_env(tmp_path)
        env["DATABASE_URL"] = request.getfixturevalue("mariadb_database")
        built = Stack(name="mariadb", env=env, tmp_path=tmp_path)
    elif request.param == "cluster":
        built = Stack(name="cluster", env=_cluster_env(request, tmp_path), tmp_path=tmp_path)
    elif request.param == "pooled":
        built = Stack(name="pooled", env=_pooled_env(request, tmp_path), tmp_path=tmp_path)
    else:
        built = Stack(name="servers", env=_servers_env(request, tmp_path), tmp_path=tmp_path)
    yield built
    built.close()


@pytest.fixture(params=["embedded", "servers"])
def redis_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """fakeredis and the real Redis, for what depends on Redis only (no MariaDB run)."""
    if request.param == "embedded":
        built = _embedded_stack(tmp_path)
    else:
        built = Stack(name="servers", env=_servers_env(request, tmp_path), tmp_path=tmp_path)
    yield built
    built.close()


@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Only the real Redis + PostgreSQL, for what an in-process backend cannot show."""
    built = Stack(name="servers", env=_servers_env(request, tmp_path), tmp_path=tmp_path)
    yield built
    built.close()


@pytest.fixture
def pooled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """The real Redis + PostgreSQL through a real PgBouncer in transaction mode."""
    built = Stack(name="pooled", env=_pooled_env(request, tmp_path), tmp_path=tmp_path)
    yield built
    built.close()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Only the real Redis Cluster (3 primaries) + PostgreSQL."""
    built = Stack(name="cluster", env=_cluster_env(request, tmp_path), tmp_path=tmp_path)
    yield built
    built.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3-protocol server, in a process of its own, for the whole session."""
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(params=["file", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Offload settings for a fresh store: a directory, or a new bucket on moto's server."""
    if request.param == "file":
        return {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"}
    server: S3Server = request.getfixturevalue("s3_server")
    return server.env(server.create_bucket())


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    """Only the embedded backend, for tests about logic rather than servers."""
    built = _embedded_stack(tmp_path)
    yield built
    built.close()


# -- reporting: how many tests ran against the real servers ---------------------------

_REDIS_FIXTURES = {
    "redis_prefix",
    "servers",
    "private_redis",
    "scrub_redis",
    "redis_cluster",
    "cluster",
    "backend",
    "pooled",
}
_PG_FIXTURES = {
    "pg_database",
    "pg_template",
    "empty_pg_database",
    "servers",
    "cluster",
    "backend",
    "pgbouncer",
    "pooled",
}
_MARIADB_FIXTURES = {"mariadb_database", "empty_mariadb_database"}
_POOLER_FIXTURES = {"pgbouncer", "pooled"}
_CLUSTER_FIXTURES = {"redis_cluster", "cluster", "cluster_prefix"}
_server_outcomes: dict[str, dict[str, int]] = {
    name: {"passed": 0, "failed": 0, "skipped": 0}
    for name in ("redis", "postgres", "mariadb", "pgbouncer", "php")
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the real servers it uses."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        on_servers = callspec is not None and callspec.params.get("stack") in {
            "servers",
            "cluster",
            "pooled",
        }
        if on_servers or names & _REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis_server)
        uses_pg = callspec is not None and callspec.params.get("kind") == "postgres"
        if on_servers or uses_pg or names & _PG_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        on_mariadb = callspec is not None and "mariadb" in (
            callspec.params.get("stack"),
            callspec.params.get("kind"),
        )
        if on_mariadb or names & _MARIADB_FIXTURES:
            item.add_marker(pytest.mark.mariadb)
        on_cluster = callspec is not None and callspec.params.get("stack") == "cluster"
        if on_cluster or names & _CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        pooled = callspec is not None and callspec.params.get("stack") == "pooled"
        if pooled or names & _POOLER_FIXTURES:
            item.add_marker(pytest.mark.pgbouncer)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Carry the markers and the figures a test added to SUMMARY_LINES on its report,
    which pytest-xdist sends from a worker to the process that prints the summary."""
    outcome = yield
    report = outcome.get_result()
    report.user_properties.extend(
        ("server", name) for marker, name in _SERVER_MARKERS if item.get_closest_marker(marker)
    )
    if call.when == "teardown":
        report.user_properties.extend(("summary", line) for line in SUMMARY_LINES)
        SUMMARY_LINES.clear()


_SERVER_MARKERS = (
    ("redis_server", "redis"),
    ("postgres", "postgres"),
    ("mariadb", "mariadb"),
    ("pgbouncer", "pgbouncer"),
    ("php", "php"),
)
SUMMARY_LINES: list[str] = []  # tests add figures worth seeing at the end of a run
_summary: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count outcomes of server tests (setup skips and failures included), and collect
    the tests' figures (in the one process that prints, with or without xdist)."""
    _summary.extend(str(value) for key, value in report.user_properties if key == "summary")
    if report.when == "teardown" or (report.when == "setup" and report.passed):
        return
    outcome = "skipped" if report.skipped else "failed" if report.failed else "passed"
    for key, name in report.user_properties:
        if key == "server":
            _server_outcomes[name][outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per real server (how many tests ran against it), then tests' own figures."""
    for line in _summary:
        terminalreporter.write_line(line)
    for name, counts in _server_outcomes.items():
        terminalreporter.write_line(
            f"real {name}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped"
        )
