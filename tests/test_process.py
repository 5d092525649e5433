"""genbuf as a real process: exit codes, one-line errors, no traceback, no secrets."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import Stack
from tests.helpers import stored_bytes
from tests.support.runner import GENBUF, run_genbuf
from tests.support.urls import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.slow


def _run(
    args: list[str], env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    return run_genbuf(args, env, stdin=stdin, timeout=60)


def test_redis_down_exits_3_with_one_line(tmp_path: Path) -> None:
    """Nothing listens on the Redis port: exit 3, one error line, a hint, no traceback."""
    env = {
        "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
    }
    done = _run(["test-redis-buffer"], env)
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: Redis is unreachable at redis://:***@127.0.0.1:1/0")
    assert lines[1].startswith("hint:") and len(lines) == 2
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_database_down_exits_3_with_one_line(tmp_path: Path) -> None:
    """Nothing listens on the database port: exit 3, password masked, JSON error on stdout."""
    env = {"DATABASE_URL": "postgresql://app:hunter2@127.0.0.1:1/app", "REDIS_URL": "memory://"}
    done = _run(["emit-validation-test", "5", "--json"], env)
    assert done.returncode == 3
    assert done.stderr.startswith("error: the database is unreachable at ")
    assert "app:***@127.0.0.1:1/app" in done.stderr
    assert json.loads(done.stdout)["error"]["exit_code"] == 3
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_schema_missing_exits_1_with_hint(tmp_path: Path) -> None:
    """An unmigrated database: exit 1 and the hint to run `genbuf db upgrade` (one that
    does not exist at all is exit 3: test_doctor.py)."""
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    env = {"DATABASE_URL": f"sqlite:///{empty}", "REDIS_URL": "memory://"}
    done = _run(["emit-validation-test", "5"], env)
    assert done.returncode == 1
    assert "tables are missing" in done.stderr and "genbuf db upgrade" in done.stderr


def test_bad_id_exits_2(tmp_path: Path) -> None:
    """A non-integer id is a usage error: exit 2, the message on stderr, and with --json
    one error document on stdout."""
    done = _run(["compact-generation", "12", "5*", "--json"], {})
    assert done.returncode == 2 and "Invalid value for 'GEN'" in done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is False and document["error"]["exit_code"] == 2
    assert document["error"]["hint"]
    plain = _run(["compact-generation", "12", "5*"], {})
    assert plain.returncode == 2 and plain.stdout == ""


def test_env_file_option_and_variable(tmp_path: Path) -> None:
    """--env-file and GENBUF_ENV_FILE both load settings; a missing file is exit 2."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"DB_CONNECTION=sqlite\nDB_DATABASE={tmp_path / 'db.sqlite3'}\n")
    upgraded = _run(["--env-file", str(env_file), "db", "upgrade", "--json"], {})
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["database"].endswith("db.sqlite3")
    via_variable = _run(["db", "upgrade", "--json"], {"GENBUF_ENV_FILE": str(env_file)})
    assert json.loads(via_variable.stdout)["revision"] == "0005"
    missing = _run(["--env-file", str(tmp_path / "nope.env"), "db", "upgrade"], {})
    assert missing.returncode == 2


def test_push_then_compact_on_real_servers_in_separate_processes(servers: Stack) -> None:
    """The operator flow across processes: push, compact --delete, inspect; byte-exact."""
    stack = servers
    gen = stack.repository.create_generation(12)
    payload = b'{"a": "\xc3\xb1"}\n[1,\n2]\n\x00no newline at end'
    assert _run(["push", "12", str(gen)], stack.env, stdin=payload).returncode == 0
    done = _run(["compact-generation", "12", str(gen), "--delete", "--soft", "--json"], stack.env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["deleted"] and out["chunk_count"] == 4 and out["bytes"] == len(payload)
    inspected = _run(["inspect-generation", "12", str(gen), "--json"], stack.env)
    assert json.loads(inspected.stdout)["keys"] == []
    assert stored_bytes(stack, gen) == payload


def test_help_loads_no_service_module() -> None:
    """`genbuf CMD --help` imports no service, SQLAlchemy, redis-py nor Alembic (start-up
    time), and `genbuf --help` not even pydantic; a real option value still goes through
    typer's coercion.

    typer 0.29 coerces every option of the root through pydantic, even an absent one
    (its own --help included), before a command's --help runs: there `CMD --help` pays
    for pydantic (genbuf uses no private hook to avoid it; pyproject.toml allows typer
    below 0.29 for that start-up cost, issue 23).
    """
    probe = (
        "import sys\n"
        "from genbuffer.cli import main\n"
        "sys.argv = ['genbuf', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'sqlalchemy', 'redis', 'alembic'} or m == 'genbuffer.compaction')\n"
        "print(code, [m for m in heavy if not m.startswith('pydantic')], "
        "any(m.startswith('pydantic') for m in heavy), file=sys.stderr)\n"
    )
    for args in (["compact-generation", "--help"], ["--help"], ["compact-pending", "--help"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True
        )
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("0 [] "), (args, done.stderr)
        if args == ["--help"]:
            assert last == "0 [] False", done.stderr
    bad = _run(["--verbose", "compact-generation", "12", "x5"], {"REDIS_URL": "memory://h"})
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def test_no_redis_setting_is_exit_2_not_a_throw_away_redis(tmp_path: Path) -> None:
    """`env -i genbuf push 1 1`: no Redis configured is a usage error with a hint, and no
    chunk is 'pushed' into an in-process Redis that vanishes with the process."""
    done = subprocess.run(
        [GENBUF, "push", "1", "1"],
        input=b'{"a":1}\n',
        env={},
        capture_output=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Redis is not configured" in stderr and "memory://" in stderr
    assert "Traceback" not in stderr and done.stdout == b""


def test_redis_db_out_of_range_is_one_line_exit_2(tmp_path: Path) -> None:
    """REDIS_DB=99 on a server with 16 databases: exit 2, one error line, no traceback."""
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_DB": "99",
        "DB_CONNECTION": "sqlite",
        "DB_DATABASE": str(tmp_path / "db.sqlite3"),
    }
    done = _run(["test-redis-buffer"], env)
    assert done.returncode == 2, done.stderr
    assert "REDIS_DB" in done.stderr and "Traceback" not in done.stderr


def test_wrong_database_user_is_not_a_missing_schema(tmp_path: Path) -> None:
    """A role that does not exist: exit 3 with a hint about the credentials, not 'the
    genbuffer tables are missing'."""
    from tests.conftest import require_server  # noqa: PLC0415

    require_server("postgres")
    env = {
        "REDIS_URL": "memory://",
        "DB_CONNECTION": "pgsql",
        "DB_HOST": "127.0.0.1",
        "DB_DATABASE": "postgres",
        "DB_USERNAME": "no_such_role_genbuf",
    }
    done = _run(["emit-validation-test", "5"], env)
    assert done.returncode == 3, done.stderr
    assert "tables are missing" not in done.stderr and "DB_USERNAME" in done.stderr


def test_a_database_user_refused_its_tables_is_one_line(servers: Stack) -> None:
    """The database refuses genbuf's user its tables (a DBA's REVOKE; PostgreSQL's
    `permission denied for table`, SQLSTATE 42501): status, show-generation and
    compact-generation printed SQLAlchemy's traceback and no JSON document (month-long
    run). Exit 3 now, one line naming the refusal, and a hint about the grants."""
    gen = servers.repository.create_generation(5)
    servers.buffer.push_many(5, gen, [b"kept"])
    url = make_url(servers.env["DATABASE_URL"])
    role = f"genbuf_refused_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT CONNECT ON DATABASE "{url.database}" TO "{role}"')
    try:
        env = {
            **servers.env,
            "DATABASE_URL": url.set(username=role, password=None).render_as_string(
                hide_password=False
            ),
        }
        for args in (
            ["status"],
            ["show-generation", "5", str(gen)],
            ["compact-generation", "5", str(gen)],
        ):
            done = _run([*args, "--json"], env)
            assert done.returncode == 3, (args, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
            error = json.loads(done.stdout)["error"]
            assert "permission denied" in error["message"] and "GRANT" in error["hint"], error
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'REVOKE CONNECT ON DATABASE "{url.database}" FROM "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
    assert servers.buffer.client.llen(servers.buffer.key_for(5, gen, None)) == 1


def test_root_help_before_a_command_lists_every_command() -> None:
    """`genbuf --help push` is the root's help: every command is listed, not only push."""
    done = _run(["--help", "push"], {})
    assert done.returncode == 0
    for command in ("compact-generation", "compact-pending", "push", "purge-chunks"):
        assert command in done.stdout, command
