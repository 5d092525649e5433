"""genbuf through CliRunner: every command, its exit codes, human and --json output."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from genbuffer.settings import Settings
from tests.conftest import Stack
from tests.helpers import audit_lines, stored_bytes


def _json(output: str) -> dict:  # type: ignore[type-arg]
    return json.loads(output)  # type: ignore[no-any-return]


def test_push_compact_inspect_round_trip(stack: Stack) -> None:
    """push from stdin, compact --delete --json, inspect shows no key left."""
    gen = stack.repository.create_generation(12)
    document = '{\n  "plan": "ñandú 🙂",\n  "steps": [1, 2]\n}\n'
    pushed = stack.cli("push", "12", str(gen), "--finish", "--json", input=document.encode())
    assert pushed.exit_code == 0, pushed.output
    assert _json(pushed.stdout)["chunks"] == 4

    compacted = stack.cli("compact-generation", "12", str(gen), "--delete", "--json")
    assert compacted.exit_code == 0, compacted.output
    out = _json(compacted.stdout)
    for field in (
        "ok",
        "persisted",
        "organization_id",
        "generation_id",
        "scenario_id",
        "key",
        "chunk_count",
        "bytes",
        "validation_id",
        "issues",
        "deleted",
    ):
        assert field in out
    assert out["ok"] and out["persisted"] and out["deleted"] and out["chunk_count"] == 4
    assert stored_bytes(stack, gen) == document.encode()

    inspected = stack.cli("inspect-generation", "12", str(gen), "--json")
    assert inspected.exit_code == 0 and _json(inspected.stdout)["keys"] == []


def test_compact_human_output_names_the_outcome(stack: Stack) -> None:
    """Without --json a person sees the result and the issues table."""
    gen = stack.repository.create_generation(3)
    stack.buffer.push_chunk(3, gen, b"{oops")
    result = stack.cli("compact-generation", "3", str(gen), "--soft")
    assert result.exit_code == 0
    assert "ok persisted 1 new chunk\n" in result.stdout and "invalid_json" in result.stdout


def test_a_strict_dry_run_says_what_would_happen(stack: Stack) -> None:
    """--strict --dry-run on invalid JSON says it would fail and nothing would be
    persisted (it printed "failed strict validation failed: nothing persisted"); two
    chunks are "2 new chunks"."""
    gen = stack.repository.create_generation(3)
    stack.buffer.push_many(3, gen, [b"{oo", b"ps"])
    dry = stack.cli("compact-generation", "3", str(gen), "--strict", "--dry-run")
    assert dry.exit_code == 1, dry.output
    first = dry.stdout.splitlines()[0]
    assert first == "would fail dry run: strict validation: nothing would be persisted", first
    soft = stack.cli("compact-generation", "3", str(gen), "--soft", "--dry-run")
    assert "would persist 2 new chunks" in soft.stdout, soft.output


def test_strict_failure_exits_1_with_validation_id(stack: Stack) -> None:
    """Strict validation failure: exit 1, ok=false and the validation_id in the JSON."""
    gen = stack.repository.create_generation(3)
    stack.buffer.push_chunk(3, gen, b"{oops")
    result = stack.cli("compact-generation", "3", str(gen), "--strict", "--json")
    assert result.exit_code == 1
    out = _json(result.stdout)
    assert out["ok"] is False and out["persisted"] is False and out["validation_id"] >= 1


def test_strict_comes_from_the_setting_by_default(stack: Stack) -> None:
    """METADATA_VALIDATION_STRICT=true makes compaction strict without --strict."""
    gen = stack.repository.create_generation(3)
    stack.buffer.push_chunk(3, gen, b"{oops")
    result = stack.cli(
        "compact-generation", "3", str(gen), "--json", env={"METADATA_VALIDATION_STRICT": "true"}
    )
    assert result.exit_code == 1 and _json(result.stdout)["mode"] == "strict"


@pytest.mark.parametrize(
    "args",
    [
        ["compact-generation", "0", "1"],
        ["compact-generation", "12", "-5"],
        ["compact-generation", "12", "5*"],
        ["compact-generation", "12", "abc"],
        ["compact-generation", "1", "2", "--scenario-id", "0"],
        ["compact-generation", "1", str(2**63)],
        ["inspect-generation", "1", "[a-z]"],
        ["push", "x", "1"],
        ["emit-validation-test", "0"],
        ["test-redis-buffer", "--chunks", "0"],
        ["migrate-compacted-from-metadata", "--batch-size", "0"],
        ["purge-chunks", "--older-than", "soon"],
        ["compact-generation", "1", "2", "--no-such-option"],
        ["compact-generation", "+12", "1"],
        ["compact-generation", "12", "1_2"],
        ["compact-generation", " 12", "1"],
        ["compact-generation", "12 ", "1"],
        ["compact-generation", "12", "\u0661\u0662"],
        ["inspect-generation", "1", "2", "--scenario-id", "+3"],
        ["emit-validation-test", "5", "--org", "1_0"],
    ],
)
def test_usage_errors_exit_2_without_traceback(stack: Stack, args: list[str]) -> None:
    """Bad ids and options: exit 2, a message on stderr, nothing on stdout."""
    result = stack.cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (
            ["compact-generation", "12", "abc"],
            "error: Invalid value for 'GEN': id must be a positive integer, got 'abc'",
            "hint: see 'genbuf compact-generation --help'",
        ),
        (
            ["status", "--bogus"],
            "error: No such option: --bogus (Possible options: --org)",
            "hint: see 'genbuf status --help'",
        ),
        (
            ["db", "upgrade", "--bogus"],
            "error: No such option: --bogus",
            "hint: see 'genbuf db upgrade --help'",
        ),
        (["nosuch"], "error: No such command 'nosuch'.", "hint: see 'genbuf --help'"),
        (
            ["--bogus"],
            "error: No such option: --bogus (Possible options: --verbose)",
            "hint: see 'genbuf --help'",
        ),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_a_usage_error_is_one_error_line_and_a_hint(
    args: list[str], error: str, hint: str, as_json: bool
) -> None:
    """Click's usage errors say it the way every genbuf error does: `error:` and `hint:`
    on stderr (no usage block), exit 2; with --json, stdout has one error document."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from genbuffer.cli import app  # noqa: PLC0415

    result = CliRunner().invoke(app, [*args, *(["--json"] if as_json else [])])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [error, hint]
    if as_json:
        document = _json(result.stdout)
        assert document["ok"] is False and document["error"]["exit_code"] == 2
        assert document["error"]["type"] == "UsageError"
        assert f"error: {document['error']['message']}" == error
        assert f"hint: {document['error']['hint']}" == hint
    else:
        assert result.stdout == ""


@pytest.mark.parametrize("args", [[], ["db"], ["config"]])
def test_a_group_without_a_command_still_prints_its_help(args: list[str]) -> None:
    """`genbuf` (or `genbuf db`) alone prints the group's help (Click's no_args_is_help,
    exit 2), not an error line."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from genbuffer.cli import app  # noqa: PLC0415

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Usage: genbuf {' '.join(args)}".rstrip() + " [OPTIONS]")
    assert "Commands:" in result.output and "error:" not in result.output


def test_missing_row_exits_1(stack: Stack) -> None:
    """No such row (or another organization's): exit 1 and one error line."""
    gen = stack.repository.create_generation(1)
    result = stack.cli("compact-generation", "2", str(gen), "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no generation")
    error = _json(result.stdout)["error"]
    assert error["type"] == "GenerationNotFound"
    assert "scenario_generations needs the row" in error["hint"]  # the app creates it


@pytest.mark.parametrize(("by", "said"), [("x" * 300, "is 300 characters"), ("", "is empty")])
def test_a_by_the_column_cannot_hold_is_one_line_and_a_hint(
    embedded: Stack, by: str, said: str
) -> None:
    """--by over 255 characters (or empty): exit 2, one error line saying what is wrong
    and a hint (it said "must be 1 to 255 characters, got 300" alone)."""
    gen = embedded.repository.create_generation(1)
    embedded.buffer.push_chunk(1, gen, b"[1]")
    done = embedded.cli("compact-generation", "1", str(gen), "--by", by)
    assert done.exit_code == 2 and done.stdout == "", done.output
    assert done.stderr.splitlines() == [
        f"error: compacted_by (--by) {said}: the column takes 1 to 255",
        "hint: give a short name of who or what compacts: a person, a job, a host "
        "(e.g. --by cron@web1); the default is genbuf",
    ]


def test_nothing_to_compact_exits_1(stack: Stack) -> None:
    """A row without a buffer: exit 1 with a hint."""
    gen = stack.repository.create_generation(1)
    result = stack.cli("compact-generation", "1", str(gen))
    assert result.exit_code == 1 and "nothing to compact" in result.stderr
    assert "hint:" in result.stderr


def test_status_list_with_no_buffer_says_so(embedded: Stack) -> None:
    """`status --list` with nothing to list says so in one line (no empty table), naming
    the prefix and the filters that left nothing; --json keeps its empty list."""
    empty = embedded.cli("status", "--list")
    assert empty.exit_code == 0, empty.output
    prefix = repr(_json(embedded.cli("status", "--json").stdout)["prefix"])
    assert f"no buffers under prefix {prefix}" in empty.stdout.splitlines()
    assert "org" not in empty.stdout and "─" not in empty.stdout  # no table header
    embedded.buffer.push_chunk(12, 5, b"x")
    filtered = embedded.cli("status", "--list", "--state", "finished", "--older-than", "1h")
    assert filtered.exit_code == 0, filtered.output
    wanted = f"no buffers under prefix {prefix} match --state finished, --older-than 1h"
    assert wanted in filtered.stdout.splitlines()
    listed = embedded.cli("status", "--list")
    assert "streaming" in listed.stdout and "no buffers" not in listed.stdout
    document = _json(embedded.cli("status", "--list", "--state", "finished", "--json").stdout)
    assert document["entries"] == []


@pytest.mark.parametrize("where", ["missing/out.txt", "file/out.txt"])
def test_show_generation_output_error_names_the_path_given(
    embedded: Stack, tmp_path: Path, where: str
) -> None:
    """--output that cannot be written (its folder missing, or a file) is exit 2 naming
    the path the user gave, never the temporary file beside it; nothing is left."""
    gen = embedded.repository.create_generation(12)
    embedded.buffer.push_chunk(12, gen, b"hello")
    assert embedded.cli("compact-generation", "12", str(gen)).exit_code == 0
    (tmp_path / "file").write_bytes(b"")
    out = tmp_path / where
    done = embedded.cli("show-generation", "12", str(gen), "--output", str(out), "--json")
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(f"error: cannot write --output {out}: "), done.stderr
    assert f".{out.name}." not in done.stderr  # the temporary file's name
    assert str(out.parent) in done.stderr.splitlines()[0]
    _, hint = done.stderr.splitlines()  # one error line and its hint (it had none)
    fix = "mkdir -p" if where.startswith("missing") else f"{tmp_path / 'file'} is a file"
    assert hint.startswith("hint: ") and fix in hint, hint
    assert _json(done.stdout)["error"]["hint"] == hint.removeprefix("hint: ")
    unread = embedded.cli("show-generation", "12", "999999", "--output", str(out))
    assert unread.exit_code == 2, unread.output  # said before the row is read
    assert _json(done.stdout)["error"]["exit_code"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "logs") == [
        "file",
        "genbuffer.sqlite3",
    ]


def test_inspect_and_delete(stack: Stack) -> None:
    """inspect-generation lists type, length and TTL; --delete removes the keys, and asks
    for --yes when no row holds their chunks."""
    stack.buffer.push_many(5, 6, [b"a", b"b"], scenario_id=7)
    listed = stack.cli("inspect-generation", "5", "6", "--json")
    keys = _json(listed.stdout)["keys"]
    assert [(k["type"], k["length"]) for k in keys] == [("list", 2), ("hash", 8)]  # stream_id too
    assert all(0 < k["ttl"] <= 86400 for k in keys)
    human = stack.cli("inspect-generation", "5", "6", "--scenario-id", "7")
    assert "list" in human.stdout and "hash" in human.stdout
    refused = stack.cli("inspect-generation", "5", "6", "--delete", "--json")
    assert refused.exit_code == 2, refused.output  # no row holds these chunks
    assert "refusing to delete 2 chunks that no row holds" in refused.stderr
    assert len(_json(stack.cli("inspect-generation", "5", "6", "--json").stdout)["keys"]) == 2
    deleted = stack.cli("inspect-generation", "5", "6", "--delete", "--yes", "--json")
    assert _json(deleted.stdout)["deleted"] == 2
    assert _json(stack.cli("inspect-generation", "5", "6", "--json").stdout)["keys"] == []


def test_emit_validation_test_writes_row_and_line(stack: Stack) -> None:
    """emit-validation-test prints the id of the row it wrote and logs the same id."""
    result = stack.cli("emit-validation-test", "9999", "--org", "12", "--json")
    assert result.exit_code == 0
    validation_id = _json(result.stdout)["validation_id"]
    row = stack.repository.issue(validation_id)
    assert row is not None and row["generation_id"] == 9999 and row["source"] == "debug"
    assert audit_lines(stack.audit_log)[-1]["validation_id"] == validation_id
    human = stack.cli("emit-validation-test", "9999")
    assert f"validation_id {validation_id + 1}" in human.stdout


def test_redis_smoke_test_passes_and_cleans_up(stack: Stack) -> None:
    """test-redis-buffer passes every check and leaves no key behind."""
    result = stack.cli("test-redis-buffer", "--chunks", "15", "--json")
    assert result.exit_code == 0, result.output
    out = _json(result.stdout)
    assert out["ok"] and {c["name"] for c in out["checks"]} >= {"read back", "ttl", "clean-up"}
    assert not stack.buffer.keyspace.exists(out["key"])
    kept = _json(stack.cli("test-redis-buffer", "--keep", "--json").stdout)
    assert stack.buffer.keyspace.exists(kept["key"])
    stack.buffer.keyspace.delete([kept["key"], kept["key"] + ":meta"])


def test_migrate_and_purge_commands(stack: Stack) -> None:
    """migrate-compacted-from-metadata and purge-chunks run and report in JSON."""
    blob = base64.b64encode(b"legacy").decode()
    gen = stack.repository.create_generation(1, metadata={"compacted": blob, "chunk_count": 2})
    dry = _json(stack.cli("migrate-compacted-from-metadata", "--dry-run", "--json").stdout)
    assert dry["would_migrate"] == 1 and dry["migrated"] == 0  # a dry run moves nothing
    assert stored_bytes(stack, gen) is None
    done = stack.cli("migrate-compacted-from-metadata", "--json")
    assert _json(done.stdout)["migrated"] == 1 and stored_bytes(stack, gen) == b"legacy"
    purge = stack.cli("purge-chunks", "--older-than", "1d", "--json")
    assert purge.exit_code == 0 and _json(purge.stdout)["purged"] == 0


def test_db_upgrade_is_idempotent(stack: Stack) -> None:
    """genbuf db upgrade on a migrated database reports head and changes nothing."""
    result = stack.cli("db", "upgrade", "--json")
    assert result.exit_code == 0, result.output
    assert _json(result.stdout)["revision"] == "0005"


def test_every_command_has_help_with_an_example(stack: Stack) -> None:
    """Each command's --help works and shows an example line."""
    for command in (
        "compact-generation",
        "inspect-generation",
        "emit-validation-test",
        "test-redis-buffer",
        "migrate-compacted-from-metadata",
        "purge-chunks",
        "push",
    ):
        result = stack.cli(command, "--help")
        assert result.exit_code == 0 and "Example" in result.stdout, command
    assert "Example" in stack.cli("db", "upgrade", "--help").stdout


def _whole_on_a_line(stdout: str, names: list[str]) -> list[str]:
    """The names that no line of ``stdout`` shows whole (cut with '…' or folded)."""
    return [name for name in names if not any(name in line for line in stdout.splitlines())]


@pytest.mark.backends("embedded")
def test_config_show_names_every_setting_whole_at_80_columns(stack: Stack) -> None:
    """At 80 columns every setting's name is on one line, never cut ('GENERATION_CHUNK_MAX_L…')."""
    shown = stack.cli("config", "show", env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    names = [name.upper() for name in Settings.model_fields]
    assert "GENERATION_CHUNKS_RETENTION_DAYS" in names
    assert _whole_on_a_line(shown.stdout, [*names, "job exclusion (effective)"]) == []
    assert max(len(line) for line in shown.stdout.splitlines() if line[:1] in "┏┃┡│└") <= 80


@pytest.mark.backends("embedded")
def test_db_check_names_every_table_whole_at_80_columns(stack: Stack) -> None:
    """db check at 80 columns: each table and column name on one line, none cut to
    'generation_artifact…', even beside long messages (an extra NOT NULL column's note)."""
    with stack.repository.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE generation_artifact_history DROP COLUMN reason")
        issues = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'metadata_validation_issues'"
        ).scalar_one()
        connection.exec_driver_sql("DROP TABLE metadata_validation_issues")
        connection.exec_driver_sql(
            issues.replace("created_at ", "tenant_id BIGINT NOT NULL, created_at ", 1)
        )
    shown = stack.cli("db", "check", env={"COLUMNS": "80"})
    assert shown.exit_code == 1, shown.output
    problems = _json(stack.cli("db", "check", "--json").stdout)["problems"]
    names = {p["table"] for p in problems} | {p["column"] for p in problems if p["column"]}
    assert "generation_artifact_history" in names and "metadata_validation_issues" in names
    assert _whole_on_a_line(shown.stdout, sorted(names)) == []
    assert max(len(line) for line in shown.stdout.splitlines() if line[:1] in "┏┃┡│└") <= 80


@pytest.mark.backends("embedded")
def test_the_audit_log_of_a_cron_run_is_beside_its_env_file(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """METADATA_VALIDATION_LOG unset and --env-file given: the audit line goes to
    storage/logs beside the env file, whatever folder the command runs in."""
    app = stack.tmp_path / "app"
    app.mkdir()
    env_file = app / ".env"
    env_file.write_text(f"REDIS_URL={stack.env['REDIS_URL']}\n")
    elsewhere = stack.tmp_path / "cron"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    gen = stack.repository.create_generation(3)
    stack.buffer.push_chunk(3, gen, b"{oops")
    del stack.env["METADATA_VALIDATION_LOG"], stack.env["REDIS_URL"]  # the env file's
    done = stack.cli("--env-file", str(env_file), "compact-generation", "3", str(gen), "--soft")
    assert done.exit_code == 0, done.output
    (line,) = audit_lines(app / "storage" / "logs" / "metadata-validation.log")
    assert line["generation_id"] == gen
    assert not (elsewhere / "storage").exists()


def _root_group() -> Any:
    import typer.main  # noqa: PLC0415

    from genbuffer.cli import app  # noqa: PLC0415

    return typer.main.get_command(app)


def test_the_root_help_summaries_are_each_commands_first_help_paragraph() -> None:
    """`genbuf --help` lists every command from SUMMARIES without importing it: each
    summary is the real command's first help paragraph, so the list shortens it alike."""
    from genbuffer.cli import COMMANDS, SUMMARIES  # noqa: PLC0415

    root = _root_group()
    ctx = root.make_context("genbuf", [], resilient_parsing=True)
    assert root.list_commands(ctx) == list(COMMANDS) == list(SUMMARIES)
    for name in COMMANDS:
        real = root.get_command(ctx, name)
        assert real is not None and real.name == name, name
        first = " ".join((real.help or "").split("\n\n")[0].split())
        assert SUMMARIES[name] == first, name


def test_commands_load_lazily_and_a_typo_is_still_suggested() -> None:
    """The root's help imports no command module; a command imports its own only; a
    mistyped name still gets typer's 'Did you mean'."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import sys\n"
        "from genbuffer.cli import main\n"
        "sys.argv = ['genbuf', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('genbuffer.cli.')\n"
        "    and not m.startswith('genbuffer.cli._')), file=sys.stderr)\n"
    )

    def loaded(*args: str) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=False
        )
        *_, last = done.stderr.strip().splitlines()
        return done.stdout + done.stderr, last

    out, modules = loaded("--help")
    assert modules == "[]" and "compact-generation" in out and "Show the effective" in out
    _, modules = loaded("push", "--help")
    assert modules == "['genbuffer.cli.push_cmd']"
    out, _ = loaded("compact-generatio", "1", "2")
    assert "Did you mean 'compact-generation'" in out


def test_the_embedded_redis_without_its_extra_is_one_line_exit_2(tmp_path: Path) -> None:
    """fakeredis is the extra `genbuffer[embedded]`: without it, REDIS_URL=memory:// is a
    usage error (exit 2) on one line naming what is missing and the pip command, with no
    traceback; a command that needs no Redis is not affected."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import sys\n"
        "sys.modules['fakeredis'] = None  # as if the extra were not installed\n"
        "from genbuffer.cli import main\n"
        "sys.argv = ['genbuf', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": "memory://",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", probe, *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    done = run("inspect-generation", "1", "1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: REDIS_URL=memory:// is the embedded Redis, which needs fakeredis (not "
        "installed): pip install 'genbuffer[embedded]'"
    ]
    assert done.stdout == ""
    assert run("db", "upgrade").returncode == 0


# Optional heavy modules a compaction that persists (plain output, no JSON Schema, no
# offload) has no use for: rich is for a terminal, the others for other commands/settings.
NOT_ON_THE_PERSISTING_PATH = (
    "rich",
    "jsonschema",
    "obstore",
    "zstandard",
    "fakeredis",
    "prometheus_client",
    "alembic",
    "hypothesis",
    # genbuffer's own: discovery, the events stream and a failure's script load when used
    "genbuffer.redis.scan",
    "genbuffer.redis.events",
    "genbuffer.lua.fail",
    "genbuffer.lua.observe",
)


def test_a_persisting_compaction_loads_no_optional_heavy_module(servers: Stack) -> None:
    """`genbuf compact-generation ORG GEN --delete` on a real row, stdout a pipe: the
    artifact persisted and the buffer deleted, and none of the optional heavy modules
    imported (the fixed cost of a compaction: bench/run.py fixed)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.support.runner import clean_environ  # noqa: PLC0415

    stack = servers
    gen = stack.repository.create_generation(12)
    stack.buffer.push_chunk(12, gen, b'{"answer": 42}')
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('loaded', sorted(({m.split('.')[0] for m in sys.modules}"
        f" | set(sys.modules)) & {set(NOT_ON_THE_PERSISTING_PATH)!r}), file=sys.stderr))\n"
        "from genbuffer.cli import main\n"
        "sys.argv = ['genbuf', *sys.argv[1:]]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "compact-generation", "12", str(gen), "--delete"],
        capture_output=True,
        text=True,
        check=False,
        env=clean_environ(stack.env),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ") and "buffer deleted  True" in done.stdout
    assert stored_bytes(stack, gen) == b'{"answer": 42}'
    assert done.stderr.strip().splitlines()[-1] == "loaded []", done.stderr


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://u:pw@127.0.0.1:notaport/app", "postgresql://u@[::1/app"]
)
def test_a_database_url_that_does_not_parse_is_one_line_exit_2(embedded: Stack, url: str) -> None:
    """A bad port or bracket in DATABASE_URL: exit 2, one line naming it (password
    masked), in --json too; never a traceback."""
    done = embedded.cli("status", "--json", env={"DATABASE_URL": url})
    assert done.exit_code == 2, done.output
    error = _json(done.stdout)["error"]
    assert error["message"].startswith("invalid DATABASE_URL postgresql"), error
    assert "pw" not in done.output and "Traceback" not in done.output


def test_a_limit_past_any_buffer_count_is_exit_2(embedded: Stack) -> None:
    """`compact-pending --limit 99999999999999999999` (and status's): a usage error
    naming --limit, not a traceback from deep inside the scan."""
    for command in ("compact-pending", "status"):
        done = embedded.cli(command, "--limit", "99999999999999999999")
        assert done.exit_code == 2, done.output
        assert "--limit" in done.output and "Traceback" not in done.output


def test_inspect_names_the_scenario_it_found_and_compact_notes_another(stack: Stack) -> None:
    """inspect-generation without --scenario-id reports the scenario of the keys it found
    (it said null); compact-generation --scenario-id of another scenario than the row's
    says so in its message (it replaced the artifact without a word)."""
    gen = stack.repository.create_generation(3, scenario_id=345)
    stack.buffer.push_many(3, gen, [b"[1]"], scenario_id=345)
    shown = _json(stack.cli("inspect-generation", "3", str(gen), "--json").stdout)
    assert shown["scenario_id"] == 345 and shown["keys"], shown
    stack.buffer.push_many(3, gen, [b"[2]"], scenario_id=999)
    done = stack.cli("compact-generation", "3", str(gen), "--scenario-id", "999", "--json")
    message = _json(done.stdout)["message"]
    assert "scenario 999, where the row's is 345" in message, message
