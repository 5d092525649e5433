"""show-generation: an artifact's bytes back, byte-exact and verified by sha256."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text, update

from genbuffer.db.rows import GEN
from tests.conftest import Stack
from tests.helpers import compact
from tests.support.runner import GENBUF, clean_environ, run_genbuf

ORG = 74

# every byte value, a NUL, a multibyte character split across chunks, no final newline
CHUNKS = [b"\x00\xff binary\n", "é".encode()[:1], "é".encode()[1:] + b"\n", bytes(range(256))]

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def test_show_generation_is_byte_exact_through_a_pipe(servers: Stack, tmp_path: Path) -> None:
    """`genbuf show-generation | cmp - pushed` and --output, as an operator runs them."""
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, CHUNKS)
    assert compact(servers, ORG, gen, delete=True).persisted
    pushed = tmp_path / "pushed.bin"
    pushed.write_bytes(b"".join(CHUNKS))
    env = clean_environ(servers.env)
    show = subprocess.Popen(
        [GENBUF, "show-generation", str(ORG), str(gen)], stdout=subprocess.PIPE, env=env
    )
    compared = subprocess.run(["cmp", "-", str(pushed)], stdin=show.stdout, check=False)
    assert show.wait() == 0 and compared.returncode == 0
    out = tmp_path / "artifact.bin"
    done = run_genbuf(
        ["show-generation", str(ORG), str(gen), "--output", str(out), "--json"], servers.env
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert out.read_bytes() == pushed.read_bytes()
    assert (
        facts["sha256"]
        == hashlib.sha256(pushed.read_bytes()).hexdigest()
        == facts["sha256_recorded"]
    )
    assert (facts["bytes"], facts["chunk_count"], facts["verified"]) == (
        len(pushed.read_bytes()),
        4,
        True,
    )
    assert facts["buffer_in_redis"] is False and facts["output"] == str(out)


def test_show_generation_refuses_bytes_that_do_not_match(stack: Stack) -> None:
    """A `compacted` changed outside genbuf: exit 1, nothing on stdout."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, CHUNKS)
    assert compact(stack, ORG, gen).persisted
    with stack.repository.engine.begin() as connection:
        connection.execute(update(GEN).where(GEN.c.id == gen).values(compacted="dGFtcGVyZWQ="))
    done = stack.cli("show-generation", str(ORG), str(gen))
    assert done.exit_code == 1 and done.stdout == ""
    assert "compaction recorded" in done.stderr


def test_show_generation_without_an_artifact(stack: Stack) -> None:
    """No such row, another organization's row, or no artifact yet: exit 1 with a hint."""
    gen = stack.repository.create_generation(ORG)
    missing = stack.cli("show-generation", str(ORG), "999999")
    assert missing.exit_code == 1 and "no generation 999999" in missing.stderr
    other = stack.cli("show-generation", str(ORG + 1), str(gen))
    assert other.exit_code == 1
    pending = stack.cli("show-generation", str(ORG), str(gen), "--json")
    assert (
        pending.exit_code == 1
        and "compact-generation" in json.loads(pending.stdout)["error"]["hint"]
    )


def test_show_generation_of_a_missing_row_says_what_to_check(stack: Stack) -> None:
    """No such row: one error line and a hint (it printed the error alone): the row is
    the app's to create; another organization's row: the ids to check. --json says the
    same hint."""
    gen = stack.repository.create_generation(ORG)
    missing = stack.cli("show-generation", str(ORG), "999999")
    assert missing.exit_code == 1 and missing.stdout == ""
    error, hint = missing.stderr.splitlines()
    assert error == f"error: no generation 999999 for organization {ORG}"
    assert hint.startswith("hint: scenario_generations has no row 999999: check GEN"), hint
    other = stack.cli("show-generation", str(ORG + 1), str(gen), "--json")
    assert other.exit_code == 1
    said = json.loads(other.stdout)["error"]
    assert said["type"] == "GenerationNotFound"
    assert said["hint"].endswith(
        "belongs to another organization: check ORG, the first argument (ORG GEN)"
    )
    assert other.stderr.splitlines() == [
        f"error: no generation {gen} for organization {ORG + 1}",
        f"hint: {said['hint']}",
    ]


def test_show_generation_reads_the_row_while_redis_is_down(servers: Stack) -> None:
    """The artifact is the row's: show-generation prints it with Redis unreachable (it
    exited 3 asking whether a buffer was still there), and says that is unknown."""
    gen = servers.repository.create_generation(3)
    servers.buffer.push_many(3, gen, [b"[1,", b"2]"])
    assert compact(servers, 3, gen, delete=True).persisted
    down = {**servers.env, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens there
    shown = run_genbuf(["show-generation", "3", str(gen)], down)
    assert shown.returncode == 0 and shown.stdout == "[1,2]", shown.stderr
    facts = json.loads(run_genbuf(["show-generation", "3", str(gen), "--json"], down).stdout)
    assert facts["buffer_in_redis"] is None and facts["verified"], facts


@pytest.mark.backends("embedded", "servers")  # MariaDB's JSON_VALID refuses such a row
def test_a_row_whose_json_is_nested_too_deep_is_one_error_line(stack: Stack) -> None:
    """A row whose metadata (or llm_response) holds JSON 5,000 levels deep, which
    jsonb stores: show-generation and compact-generation printed a RecursionError's
    traceback and no JSON document; the worker logged `RecursionError` (month-long run).
    One error line now, exit 1, the row left as it is."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, CHUNKS)
    deep = '{"deep": ' + "[" * 5000 + "]" * 5000 + "}"
    statement = (
        "UPDATE scenario_generations SET metadata = :m WHERE id = :g"
        if stack.name == "embedded"
        else "UPDATE scenario_generations SET metadata = CAST(:m AS JSONB) WHERE id = :g"
    )
    with stack.repository.engine.begin() as connection:
        connection.execute(text(statement), {"m": deep, "g": gen})
    for args in (["show-generation"], ["compact-generation"]):
        done = stack.cli(*args, str(ORG), str(gen), "--json")
        assert done.exit_code == 1, done.stderr
        said = json.loads(done.stdout)["error"]
        assert "nested too deeply" in said["message"], said
        assert "Traceback" not in done.stderr
    assert stack.buffer.client.llen(stack.buffer.key_for(ORG, gen, None)) == len(CHUNKS)
