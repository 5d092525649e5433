"""The unattended path beside a Laravel app: cron finds every buffer, nothing is wiped,
nothing is silently skipped (issue 9).

Producers here write the way the app's own code does: a bare RPUSH (no meta hash),
RPUSH with only a HINCRBY counter, and a key without the scenario the row has.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select

from genbuffer import keys
from genbuffer.db.rows import LEDGER
from genbuffer.errors import RedisUnavailable
from genbuffer.faults import FaultPlan
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.layout import layout_of
from tests.conftest import Stack
from tests.helpers import compact, stored_bytes
from tests.support.clock import let_time_pass

ORG = 12

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def _plain_push(stack: Stack, key: str, chunks: list[bytes], counter: bool = False) -> None:
    """Push like phpredis in the Laravel app: RPUSH, EXPIRE on the first, maybe HINCRBY."""
    client = stack.buffer.client
    for chunk in chunks:
        if client.rpush(key, chunk) == 1:
            client.expire(key, 3600)
        if counter:
            client.hincrby(keys.meta_key(key), "chunk_count", 1)


def _cron_around_a_pause(stack: Stack, key: str) -> list[dict[str, Any]]:
    """The cron line twice, the stream at ``key`` quiet for ten minutes in between: the
    first run finds it streaming and notes what it saw, the second judges it idle by that
    (without CLIENT NO-TOUCH nothing else tells: see genbuffer.engine.idleness)."""

    def cron() -> dict[str, Any]:
        done = stack.cli("compact-pending", "--idle", "5m", "--json")
        assert done.exit_code == 0, done.output
        return dict(json.loads(done.stdout))

    first = cron()
    assert (first["compacted"], first["skipped_active"]) == (0, 1), first
    let_time_pass(stack.buffer, key, timedelta(minutes=10))
    return [first, cron()]


@pytest.mark.parametrize("counter", [False, True], ids=["no-meta", "counter-only"])
def test_compact_pending_compacts_a_plain_producers_buffer(stack: Stack, counter: bool) -> None:
    """A list without a meta hash, or with only `chunk_count`, is found, judged idle and
    compacted byte-exact by the cron line; the buffer is gone afterwards."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    chunks = [b'{"plan": "Porto ', "ñ".encode(), b'", "steps": [1, 2]}']
    _plain_push(stack, key, chunks, counter=counter)
    outputs = _cron_around_a_pause(stack, key)
    assert outputs[-1]["compacted"] == 1 and outputs[-1]["ok"]
    assert stored_bytes(stack, gen) == b"".join(chunks)
    assert stack.buffer.keyspace.generation_keys(ORG, gen) == []


def test_a_streaming_plain_buffer_is_left_alone(stack: Stack) -> None:
    """A plain list still being written is not taken as idle."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    _plain_push(stack, key, [b"[1"])
    done = stack.cli("compact-pending", "--idle", "1h", "--json")
    out = json.loads(done.stdout)
    assert (out["compacted"], out["skipped_active"], done.exit_code) == (0, 1, 0)
    assert stored_bytes(stack, gen) is None


def test_key_without_the_rows_scenario_is_compacted_and_named(stack: Stack) -> None:
    """The producer did not know the scenario: the key without it is used, and said."""
    gen = stack.repository.create_generation(ORG, scenario_id=345)
    stack.buffer.push_many(ORG, gen, [b"[1,", b"2]"])  # no scenario in the key
    done = stack.cli("compact-generation", str(ORG), str(gen), "--delete", "--json")
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["key"] == stack.buffer.key_for(ORG, gen, None) and out["deleted"]
    assert "without scenario 345" in out["message"]
    assert stored_bytes(stack, gen) == b"[1,2]"


def test_two_buffers_for_one_generation_is_an_error_naming_both(stack: Stack) -> None:
    """A buffer under the scenario key and one under the key without: exit 1, both named."""
    gen = stack.repository.create_generation(ORG, scenario_id=345)
    stack.buffer.push_many(ORG, gen, [b"a"])
    stack.buffer.push_many(ORG, gen, [b"b"], scenario_id=345)
    done = stack.cli("compact-generation", str(ORG), str(gen))
    assert done.exit_code == 1
    assert stack.buffer.key_for(ORG, gen, None) in done.stderr
    assert stack.buffer.key_for(ORG, gen, 345) in done.stderr
    assert stored_bytes(stack, gen) is None


@pytest.mark.parametrize(
    ("under_scenario", "without", "whole", "outcome"),
    [
        (b'{"a": 1}', b'{"b": 2}', b'{"b": 2}', "replaced"),
        (b'{"a": [1, ', b"2]}", b'{"a": [1, 2]}', "appended"),
    ],
    ids=["two-documents", "one-document"],
)
def test_both_buffers_compacted_one_by_one_are_never_spliced_silently(
    stack: Stack, under_scenario: bytes, without: bytes, whole: bytes, outcome: str
) -> None:
    """Following the two-buffers hint (compact each key on its own) gives two streams
    of one generation: the second meets the first's provisional artifact and the same
    rule applies, so two documents are not spliced into one that does not parse."""
    gen = stack.repository.create_generation(ORG, scenario_id=345)
    stack.buffer.push_many(ORG, gen, [under_scenario], scenario_id=345)
    stack.buffer.push_many(ORG, gen, [without])
    first = stack.cli(
        "compact-generation", str(ORG), str(gen), "--scenario-id", "345", "--delete", "--json"
    )
    assert first.exit_code == 0, first.output
    second = stack.cli("compact-generation", str(ORG), str(gen), "--delete", "--json")
    assert second.exit_code == 0, second.output
    out = json.loads(second.stdout)
    assert out["regenerated"] == outcome and "invalid_json" not in json.dumps(out["issues"])
    assert stored_bytes(stack, gen) == whole
    assert [h["reason"] for h in stack.repository.history(gen)] == [outcome]


def test_compact_pending_uses_the_key_it_found(stack: Stack) -> None:
    """compact-pending compacts the scenario-less key of a row that has a scenario."""
    gen = stack.repository.create_generation(ORG, scenario_id=345)
    stack.buffer.push_many(ORG, gen, [b'{"a": 1}'])
    stack.buffer.finish(ORG, gen)
    done = stack.cli("compact-pending", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["compacted"] == 1, done.output
    assert stored_bytes(stack, gen) == b'{"a": 1}'


def test_rerun_of_a_finished_compaction_is_success(stack: Stack) -> None:
    """Already done is success: exit 0, persisted false, "already compacted"."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"[1]"])
    first = stack.cli("compact-generation", str(ORG), str(gen), "--delete", "--json")
    assert first.exit_code == 0
    again = stack.cli("compact-generation", str(ORG), str(gen), "--delete", "--json")
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["ok"] and not out["persisted"] and "already compacted" in out["message"]
    assert stored_bytes(stack, gen) == b"[1]"


def test_a_regenerated_stream_replaces_a_whole_artifact_and_keeps_it(stack: Stack) -> None:
    """A job retried after its compaction streams everything again: the new stream
    replaces the artifact, the old one (bytes and llm_response) stays in the history."""
    gen = stack.repository.create_generation(ORG)
    first = [b'{"v": ', b"1}"]
    stack.buffer.push_many(ORG, gen, first)
    stack.buffer.finish(ORG, gen)
    assert compact(stack, ORG, gen, delete=True).persisted
    second = [b'{"v": ', b"2}"]
    stack.buffer.push_many(ORG, gen, second)
    result = compact(stack, ORG, gen, delete=True)
    assert result.ok and result.regenerated == "replaced" and result.history_id is not None
    assert stored_bytes(stack, gen) == b'{"v": 2}'
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response == {"v": 2} and row.chunk_count == 2
    history = stack.repository.history(gen)
    assert [h["id"] for h in history] == [result.history_id]
    assert base64.b64decode(history[0]["compacted"]) == b'{"v": 1}'
    assert history[0]["llm_response"] == {"v": 1} and history[0]["reason"] == "replaced"
    assert row.metadata["history"][0]["id"] == result.history_id
    assert row.metadata["history"][0]["bytes"] == len(b'{"v": 1}')


def test_append_policy_keeps_a_good_llm_response(stack: Stack) -> None:
    """With GENERATION_REGENERATION=append the new stream is appended; the document the
    row held is not wiped by a concatenation that does not parse, and is in the history."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b'{"v": 1}'])
    stack.buffer.finish(ORG, gen)
    compact(stack, ORG, gen, delete=True)
    stack.buffer.push_many(ORG, gen, [b'{"v": 2}'])
    result = compact(stack, ORG, gen, delete=True, config={"regeneration": "append"})
    assert result.regenerated == "appended" and result.persisted
    assert stored_bytes(stack, gen) == b'{"v": 1}{"v": 2}'
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response == {"v": 1}
    assert "invalid_json" in [issue["code"] for issue in result.issues]
    assert len(stack.repository.history(gen)) == 1


@pytest.mark.parametrize(
    "case",
    [
        (
            [b'{"plan": ["a", '],
            [b'"b"]}'],
            "append",
            b'{"plan": ["a", "b"]}',
            "appended",
            "json_continues",
        ),
        ([b"[0]"], [b"[1]"], "append", b"[1]", "replaced", "json_new_document"),
        (
            [b"partial text, "],
            [b"the rest"],
            "append",
            b"partial text, the rest",
            "appended",
            "late_chunks_setting",
        ),
        (
            [b"partial text, "],
            [b"all of it again"],
            "replace",
            b"all of it again",
            "replaced",
            "late_chunks_setting",
        ),
    ],
    ids=["json-continues", "json-new-document", "setting-append", "setting-replace"],
)
def test_chunks_after_a_provisional_artifact_follow_the_content(
    stack: Stack, case: tuple[list[bytes], list[bytes], str, bytes, str, str]
) -> None:
    """A stream compacted (and deleted) before it was marked finished is provisional:
    later chunks continue it when the two parse as one JSON document, replace it when
    only they parse, else GENERATION_LATE_CHUNKS decides; the row, its history entry
    and the ledger say which and why."""
    first, later, late_policy, whole, outcome, rule = case
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, first)
    assert compact(stack, ORG, gen, delete=True).persisted
    row = stack.repository.get_generation(gen)
    assert row is not None and row.metadata["buffer"]["provisional"] == "open"
    stack.buffer.push_many(ORG, gen, later)
    result = compact(stack, ORG, gen, delete=True, config={"late_chunks": late_policy})
    assert (result.regenerated, result.persisted) == (outcome, True), result.message
    assert stored_bytes(stack, gen) == whole
    row = stack.repository.get_generation(gen)
    assert row is not None and row.metadata["history"][-1]["rule"] == rule
    assert row.chunk_count == (len(later) if outcome == "replaced" else len(first) + len(later))
    if rule == "json_continues":
        assert row.llm_response == {"plan": ["a", "b"]}
        assert "invalid_json" not in [issue["code"] for issue in result.issues]
    with stack.repository.engine.connect() as connection:
        ledger = connection.execute(
            select(LEDGER.c.late_chunks, LEDGER.c.late_rule).where(
                LEDGER.c.generation_id == gen, LEDGER.c.late_chunks.is_not(None)
            )
        ).all()
    assert [tuple(entry) for entry in ledger] == [(outcome, rule)]


@pytest.mark.backends("embedded", "servers")
@pytest.mark.parametrize(
    ("later", "outcome"),
    [(b'"}', "appended"), (b'{"b": "' + b"y" * 600 + b'"}', "replaced")],
    ids=["continues", "new-document"],
)
def test_a_large_provisional_artifact_is_judged_as_it_streams(
    stack: Stack, later: bytes, outcome: str
) -> None:
    """Past the parse limit, in an object store: whether the later stream continues the
    artifact or is a new document is told by streamed checks, as for a small one."""
    stack.env.update(
        GENERATION_OFFLOAD_URL=f"file://{stack.tmp_path / 'objects'}",
        GENERATION_OFFLOAD_BYTES="100",
        GENERATION_PARSE_MAX_BYTES="64",
    )
    gen = stack.repository.create_generation(ORG)
    first = b'{"a": "' + b"x" * 600
    stack.buffer.push_many(ORG, gen, [first[:300], first[300:]])
    assert compact(stack, ORG, gen, delete=True).persisted
    stack.buffer.push_many(ORG, gen, [later])
    result = compact(stack, ORG, gen, delete=True)
    assert (result.regenerated, result.persisted) == (outcome, True), result.message
    whole = later if outcome == "replaced" else first + later
    shown = stack.cli("show-generation", str(ORG), str(gen), "--output", str(stack.tmp_path / "a"))
    assert shown.exit_code == 0, shown.output
    assert (stack.tmp_path / "a").read_bytes() == whole
    assert "invalid_json" not in [issue["code"] for issue in result.issues]


def test_a_paused_plain_stream_ends_whole_in_the_row(stack: Stack) -> None:
    """A plain producer's stream that pauses past --idle is compacted and deleted by
    cron; its later chunks continue the artifact (they parse as one document together)
    rather than replacing it: the row ends with the whole stream, not its second half."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    _plain_push(stack, key, [b'{"steps": [', b'"one", '])
    first = _cron_around_a_pause(stack, key)
    assert first[-1]["compacted"] == 1
    _plain_push(stack, key, [b'"two"', b"]}"])
    second = _cron_around_a_pause(stack, key)
    assert second[-1]["compacted"] == 1
    assert stored_bytes(stack, gen) == b'{"steps": ["one", "two"]}'
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response == {"steps": ["one", "two"]}
    assert row.metadata["buffer"]["provisional"] == "idle"
    assert row.metadata["history"][-1]["reason"] == "appended"
    assert row.metadata["history"][-1]["rule"] == "json_continues"
    shown = json.loads(stack.cli("show-generation", str(ORG), str(gen), "--json").stdout)
    assert shown["provisional"] == "idle"
    assert [(e["outcome"], e["rule"]) for e in shown["late_chunks"]] == [
        ("appended", "json_continues")
    ]
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["late_chunks_last_day"] == {"appended": {"json_continues": 1}}


def test_a_finished_stream_is_replaced_by_a_later_one(stack: Stack) -> None:
    """A stream the producer marked finished is whole: a later stream replaces it even
    when the two would parse together (GENERATION_REGENERATION, as before)."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b'{"v": [1, '])
    stack.buffer.finish(ORG, gen)
    assert compact(stack, ORG, gen, delete=True).persisted
    stack.buffer.push_many(ORG, gen, [b"2]}"])
    result = compact(stack, ORG, gen, delete=True)
    assert (result.regenerated, stored_bytes(stack, gen)) == ("replaced", b"2]}")
    row = stack.repository.get_generation(gen)
    assert row is not None and row.metadata["history"][-1]["rule"] == "finished"


def _state(client: redis.Redis, names: list[str]) -> dict[str, tuple[Any, int]]:
    """Each key's serialized value and TTL (ms), as DUMP and PTTL report them."""
    return {name: (client.dump(name), int(client.pttl(name))) for name in names}


def test_dry_runs_change_nothing(servers: Stack) -> None:
    """--dry-run leaves every key byte-identical (DUMP) with its TTL, writes no row, and
    reports what it would do; five of them do not quarantine anything."""
    stack = servers
    client = stack.buffer.client
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    _plain_push(stack, key, [b"[1,", b"2]"], counter=True)
    client.expire(key, 30)
    client.expire(keys.meta_key(key), 30)
    bad = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, bad, [b"{broken"])
    names = [key, keys.meta_key(key), *stack.buffer.keyspace.generation_keys(ORG, bad)]
    for name in (key, stack.buffer.key_for(ORG, bad, None)):  # idle for --idle 1s, if judged
        let_time_pass(stack.buffer, name, timedelta(seconds=5))
    before = _state(client, names)
    for _ in range(5):
        done = stack.cli("compact-generation", str(ORG), str(gen), "--dry-run", "--json")
        assert done.exit_code == 0 and "would persist 2" in json.loads(done.stdout)["message"]
        strict = stack.cli(
            "compact-generation", str(ORG), str(bad), "--dry-run", "--strict", "--json"
        )
        assert strict.exit_code == 1
    pending = stack.cli("compact-pending", "--idle", "1s", "--dry-run", "--json")
    out = json.loads(pending.stdout)
    # `bad` is idle by its last_chunk_at; the plain list by OBJECT IDLETIME, which the
    # dry runs' reads may just have reset: one or both would be compacted
    assert out["dry_run"] and out["compacted"] == 0, out
    assert out["would_compact"] == out["eligible"] >= 1, out
    after = _state(client, names)
    assert {n: v for n, (v, _) in after.items()} == {n: v for n, (v, _) in before.items()}
    for name in names:  # TTLs only ran down, never raised
        assert after[name][1] <= before[name][1]
    assert stored_bytes(stack, gen) is None and stored_bytes(stack, bad) is None


def test_wrong_prefix_fails_naming_the_prefix(stack: Stack) -> None:
    """The app writes under its prefix, genbuf is configured without: the cron lines exit 1
    naming the prefix to set, instead of reporting zero buffers."""
    app_prefix = stack.buffer.prefix + "laravel_database_"
    app = GenerationBuffer(stack.buffer.client, prefix=app_prefix)
    gen = stack.repository.create_generation(ORG)
    app.push_many(ORG, gen, [b"[1]"])
    app.finish(ORG, gen)
    pending = stack.cli("compact-pending", "--idle", "30m", "--json")
    assert pending.exit_code == 1, pending.output
    assert f"REDIS_PREFIX={app_prefix}" in pending.stderr
    document = json.loads(pending.stdout)
    assert document["ok"] is False and app_prefix in document["error"]["hint"]
    smoke = stack.cli("test-redis-buffer", "--json")
    assert smoke.exit_code == 1
    checks = {c["name"]: c for c in json.loads(smoke.stdout)["checks"]}
    assert not checks["prefix"]["ok"] and app_prefix in checks["prefix"]["detail"]
    shown = stack.cli("config", "show", "--json")
    found = {row["name"]: row for row in json.loads(shown.stdout)["settings"]}
    assert app_prefix in found["buffers found"]["value"]
    compacted = stack.cli("compact-generation", str(ORG), str(gen))
    assert compacted.exit_code == 1 and app_prefix in compacted.stderr
    assert stack.cli("compact-pending", "--json", env={"REDIS_PREFIX": app_prefix}).exit_code == 0
    assert stored_bytes(stack, gen) == b"[1]"


def test_warnings_go_into_the_json_document_not_around_it(embedded: Stack) -> None:
    """With APP_NAME set and no prefix, config show --json's stdout is exactly one
    document with the warning inside it."""
    done = embedded.cli("config", "show", "--json", env={"APP_NAME": "Scenario Planner"})
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert document["ok"] and any("REDIS_PREFIX" in w for w in document["warnings"])


def test_the_app_name_note_is_one_short_line_said_by_set_up_checks_only(embedded: Stack) -> None:
    """APP_NAME without REDIS_PREFIX: cron jobs' logs stay free of it (a wrong prefix
    fails them by name); config show says it once, in one line under 100 characters,
    and doctor's prefix check warns with it while no buffer confirms the prefix."""
    app = {"APP_NAME": "Scenario Planner"}
    for args in (["compact-pending", "--json"], ["purge-chunks", "--json"], ["status"]):
        done = embedded.cli(*args, env=app)
        assert done.exit_code == 0, done.output
        assert "APP_NAME" not in done.stderr and "APP_NAME" not in done.stdout, args
    shown = embedded.cli("config", "show", env=app)
    noted = [line for line in shown.stderr.splitlines() if "APP_NAME" in line]
    assert len(noted) == 1 and len(noted[0]) < 100, noted
    assert "REDIS_PREFIX_RULE" in noted[0]
    doctor = embedded.cli("doctor", "--json", env=app)
    prefix = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["prefix"]
    assert prefix["status"] == "warn" and "REDIS_PREFIX_RULE" in prefix["hint"]
    assert "APP_NAME" not in doctor.stderr
    embedded.buffer.push_chunk(ORG, 1, b"[1]")  # a buffer under the prefix: it works
    again = embedded.cli("config", "show", env=app)
    assert "APP_NAME" not in again.stderr


def test_a_quarantined_buffer_keeps_expiring(stack: Stack) -> None:
    """A list pushed without a TTL that gets quarantined is given one, like its meta."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, None)
    stack.buffer.client.rpush(key, b"{bad")  # no EXPIRE: the app forgot it
    for _ in range(2):
        compact(stack, ORG, gen, strict=True, config={"max_attempts": 2})
    assert stack.buffer.protocol.snapshot(key, read_only=True).quarantined
    assert (
        stack.buffer.keyspace.ttl_of(key) > 0
        # where the failures are kept: the meta hash, or on a cluster {K}:genbuf
        and stack.buffer.keyspace.ttl_of(layout_of(stack.buffer.target, key).state_key(key)) > 0
    )


def test_lua_calls_survive_a_flushed_script_cache(servers: Stack) -> None:
    """SCRIPT FLUSH at every step of a compaction (a restart, a failover): it completes."""
    stack = servers
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"[1,", b"2]"])

    def flush(_step: str) -> None:
        stack.buffer.client.script_flush()

    stack.buffer.client.script_flush()
    result = compact(stack, ORG, gen, delete=True, config={"faults": FaultPlan(on_step=flush)})
    assert result.ok and result.deleted and stored_bytes(stack, gen) == b"[1,2]"
    stack.buffer.client.script_flush()
    assert stack.cli("test-redis-buffer").exit_code == 0


def test_a_script_cache_flushed_between_load_and_call(
    servers: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is flushed right after genbuf loads a script (a restart or a failover at
    that moment): the call is made again and the compaction completes; a server that
    flushes every time is reported as unreachable (exit 3), one line, no traceback."""
    stack = servers
    client = stack.buffer.client
    original = client.script_load
    flushes = [1]  # how many loads are followed by a flush

    def load_then_flush(script: Any) -> Any:
        sha = original(script)
        if flushes[0] != 0:
            flushes[0] -= 1
            client.script_flush()
        return sha

    monkeypatch.setattr(client, "script_load", load_then_flush)
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"[1,", b"2]"])
    client.script_flush()
    result = compact(stack, ORG, gen, delete=True)
    assert result.ok and result.deleted and stored_bytes(stack, gen) == b"[1,2]"
    again = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, again, [b"[3]"])  # (a push runs push.lua: before the flushes)
    flushes[0] = -1  # from now on, every load is followed by a flush
    client.script_flush()
    with pytest.raises(RedisUnavailable) as raised:
        compact(stack, ORG, again)
    assert "NOSCRIPT" in raised.value.message
    assert stored_bytes(stack, again) is None


def test_human_output_folds_long_keys_at_80_columns(stack: Stack) -> None:
    """At 80 columns a long key folds onto more lines instead of being cut to '…'."""
    gen = stack.repository.create_generation(ORG, scenario_id=9_000_000_000_000)
    stack.buffer.push_many(ORG, gen, [b"[1]"], scenario_id=9_000_000_000_000)
    shown = stack.cli("inspect-generation", str(ORG), str(gen), env={"COLUMNS": "80"})
    assert "…" not in shown.stdout
    flat = "".join(part.strip(" │┃|") for part in shown.stdout.splitlines())
    assert stack.buffer.key_for(ORG, gen, 9_000_000_000_000) in "".join(flat.split())


COMMANDS_WITH_JSON = [
    ["compact-pending"],
    ["test-redis-buffer"],
    ["emit-validation-test", "5"],
    ["migrate-compacted-from-metadata", "--dry-run"],
    ["purge-chunks", "--dry-run"],
    ["inspect-generation", "1", "2"],
    ["db", "upgrade"],
    ["db", "check"],
    ["config", "show"],
    ["compact-generation", "1", "99999"],
    ["push", "1", "2"],
]


@pytest.mark.parametrize("args", COMMANDS_WITH_JSON, ids=" ".join)
def test_every_json_document_has_ok(embedded: Stack, args: list[str]) -> None:
    """Every command's --json stdout is one document with a boolean `ok`."""
    done = embedded.cli(*args, "--json", input=b"x\n")
    document = json.loads(done.stdout)
    assert isinstance(document["ok"], bool), done.stdout
    assert document["ok"] == (done.exit_code == 0), done.output
