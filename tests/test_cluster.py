"""genbuf on a real 3-primary Redis Cluster: the app's untagged keys from a PHP
RedisCluster producer, the tagged template, and what a cluster refuses.

The compaction, buffer and state-machine suites run on the cluster too (their
``ON_CLUSTER``); the worker fleet with kill -9 in test_worker; the failover chaos
run in tests/chaos_cluster.py; a worker fleet through a failover, a deleted stream,
a malformed event and a reshard in tests/worker_faults.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from genbuffer import keys
from genbuffer.compaction import Found
from genbuffer.errors import RedisUnavailable, UsageError
from genbuffer.faults import FaultPlan, SimulatedCrash
from genbuffer.lua.ack import AckArgs, Layout, WhenEmpty
from genbuffer.lua.drop_state import DropStateArgs
from genbuffer.lua.release_meta import REMEMBER_AFTER_DROP
from genbuffer.redis.connection import load_script
from genbuffer.redis.scripts import ScriptRunner
from tests.conftest import SUMMARY_LINES, Stack, require_cluster_binaries, require_server
from tests.helpers import compact, stored_bytes
from tests.support.cluster import LocalCluster
from tests.support.runner import run_genbuf
from tests.test_laravel import require_php, run_php
from tests.worker_faults import run_fleet_faults

ORG = 12
CHUNKS = [
    b'{"plan": "Lisboa ',
    "ñ".encode()[:1],
    "ñ".encode()[1:] + b' \xf0\x9f\x9a\x80",',
    b' "n": 2}\n',
]


def _php_produce(stack: Stack, tmp_path: Path, first: int, count: int, mode: str) -> list[str]:
    """Run tests/php/cluster_producer.php; the keys it wrote (prefix included)."""
    chunks_file = tmp_path / "chunks.b64"
    chunks_file.write_text("".join(base64.b64encode(c).decode() + "\n" for c in CHUNKS))
    return run_php(
        "cluster_producer.php",
        stack.env["REDIS_CLUSTER_NODES"],
        stack.env["REDIS_PREFIX"],
        str(ORG),
        str(first),
        str(count),
        "3600",
        mode,
        str(chunks_file),
    )


def _genbuf(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_genbuf(list(args), stack.env)


@pytest.mark.slow
@pytest.mark.php
def test_php_cluster_producer_keys_are_compacted_byte_exact(cluster: Stack, tmp_path: Path) -> None:
    """A PHP RedisCluster producer with the app's prefix writes untagged keys (list and
    meta hash in different slots), and the tagged template: compact-generation --delete,
    inspect-generation, compact-pending and test-redis-buffer all succeed as processes,
    byte-exact, no key left, no CROSSSLOT."""
    require_php()
    gens = [cluster.repository.create_generation(ORG) for _ in range(6)]
    untagged = _php_produce(cluster, tmp_path, gens[0], 2, "meta")
    plain = _php_produce(cluster, tmp_path, gens[2], 2, "nometa")
    tagged = _php_produce(cluster, tmp_path, gens[4], 2, "tagged")
    prefix = cluster.env["REDIS_PREFIX"]
    assert untagged[0] == keys.chunks_key(ORG, gens[0], None, prefix)
    assert tagged[0] == keys.chunks_key(ORG, gens[4], None, prefix, tagged=True)
    slot = cluster.buffer.keyspace.slots
    assert slot([untagged[0]]) != slot([keys.meta_key(untagged[0])])  # the app's two slots
    assert slot([tagged[0]]) == slot([keys.meta_key(tagged[0])])

    looked = _genbuf(cluster, "compact-pending", "--idle", "1h", "--json")  # a first look
    assert looked.returncode == 0 and json.loads(looked.stdout)["compacted"] == 0, looked.stderr
    inspected = json.loads(
        _genbuf(cluster, "inspect-generation", str(ORG), str(gens[0]), "--json").stdout
    )
    # genbuf's own hash beside the app's untagged list holds the first look
    own = keys.state_key(untagged[0])
    assert {k["key"] for k in inspected["keys"]} == {untagged[0], keys.meta_key(untagged[0]), own}
    for gen in (gens[0], gens[4]):
        done = _genbuf(cluster, "compact-generation", str(ORG), str(gen), "--delete", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["deleted"]
    # the rest, idle since the first look (at least a second ago: the runs above)
    pending = _genbuf(cluster, "compact-pending", "--idle", "1s", "--json")
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)["compacted"] == 4, pending.stdout
    for gen in gens:
        assert stored_bytes(cluster, gen) == b"".join(CHUNKS), gen
        keys_left = json.loads(
            _genbuf(cluster, "inspect-generation", str(ORG), str(gen), "--json").stdout
        )
        assert keys_left["keys"] == []
    smoke = _genbuf(cluster, "test-redis-buffer", "--json")
    assert smoke.returncode == 0, smoke.stdout
    checks = {c["name"]: c["ok"] for c in json.loads(smoke.stdout)["checks"]}
    assert checks["one slot"] and checks["read back"] and checks["clean-up"]
    assert all("CROSSSLOT" not in run for run in (pending.stderr, smoke.stderr))
    assert plain  # both of the plain producer's lists were among compact-pending's


def test_sequenced_pushes_need_the_tagged_template(cluster: Stack) -> None:
    """Sequence numbers need list and counters in one slot: untagged keys refuse them
    with the setting to use; the tagged template takes them, idempotent."""
    with pytest.raises(UsageError, match="GENERATION_KEY_TAGS"):
        cluster.buffer.push_many(ORG, 900, [b"a"], seq=0)
    cluster.env["GENERATION_KEY_TAGS"] = "true"
    tagged = Stack(name="cluster", env=cluster.env, tmp_path=cluster.tmp_path)
    try:
        tagged.buffer.push_many(ORG, 901, [b"a", b"b"], seq=0)
        again = tagged.buffer.push_many(ORG, 901, [b"b", b"c"], seq=1)
        assert (again.appended, again.skipped) == (1, 1)
        key = tagged.buffer.key_for(ORG, 901, None)
        assert key.endswith("}") and tagged.buffer.client.lrange(key, 0, -1) == [b"a", b"b", b"c"]
    finally:
        tagged.close()


def test_a_prefix_with_braces_is_refused_on_a_cluster(cluster: Stack) -> None:
    """Only the first {…} is hashed: a prefix holding one would put every key in one slot."""
    done = run_genbuf(["test-redis-buffer"], {**cluster.env, "REDIS_PREFIX": "app{1}:"})
    assert done.returncode == 2
    assert "brace" in done.stderr and "Traceback" not in done.stderr


def test_scan_covers_every_primary(cluster: Stack, redis_cluster: object) -> None:
    """Discovery finds buffers on all three primaries (SCAN asks each one)."""
    gens = range(1000, 1060)
    for gen in gens:
        cluster.buffer.push_chunk(ORG, gen, b"x")
    owners = set()
    client = cluster.buffer.client
    assert isinstance(client, redis.RedisCluster)
    for gen in gens:
        owners.add(client.get_node_from_key(cluster.buffer.key_for(ORG, gen, None)).port)
    assert len(owners) == 3
    found = {b.generation_id for b in cluster.buffer.scan.discover()}
    assert found == set(gens)


def test_config_show_and_doctor_describe_the_cluster(cluster: Stack) -> None:
    """config show and doctor name the cluster's primaries, replicas and slot coverage."""
    shown = json.loads(_genbuf(cluster, "config", "show", "--json").stdout)
    assert shown["redis"]["cluster"]["primaries"] == 3
    assert shown["redis"]["cluster"]["slots_covered"] == 16384
    doctor = json.loads(_genbuf(cluster, "doctor", "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "cluster"]
    assert check["status"] == "ok" and "3 primaries" in check["message"]


def test_a_cluster_with_a_password(tmp_path: Path, pg_database: str) -> None:
    """REDIS_PASSWORD applies to every node (and to the slot map's discovery); without it
    the command stops with one line and exit 3, nothing written."""
    require_cluster_binaries()
    cluster = LocalCluster(tmp_path / "cluster", password="s3cret/#?").start()
    try:
        env = {
            "REDIS_CLUSTER_NODES": cluster.nodes,
            "REDIS_PREFIX": "pw_",
            "DATABASE_URL": pg_database,
            "METADATA_VALIDATION_LOG": str(tmp_path / "audit.log"),
        }
        refused = run_genbuf(["test-redis-buffer"], env)
        assert refused.returncode == 3, refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2 and "Traceback" not in refused.stderr
        assert "s3cret" not in refused.stderr
        done = run_genbuf(["test-redis-buffer", "--json"], {**env, "REDIS_PASSWORD": "s3cret/#?"})
        assert done.returncode == 0, done.stdout
        assert "s3cret" not in done.stdout + done.stderr
    finally:
        cluster.stop()


def test_keys_of_both_templates_are_read(embedded: Stack) -> None:
    """Pushes follow GENERATION_KEY_TAGS; compaction finds a buffer under either template,
    so old keys are compacted while they live out their TTL after the switch (and a
    producer already on the tagged snippet is found before genbuf is switched)."""
    old = embedded.repository.create_generation(ORG)
    new = embedded.repository.create_generation(ORG)
    assert embedded.cli("push", str(ORG), str(old), input="untagged\n").exit_code == 0
    tagged_env = {"GENERATION_KEY_TAGS": "true"}
    pushed = embedded.cli("push", str(ORG), str(new), "--json", input="tagged\n", env=tagged_env)
    assert json.loads(pushed.stdout)["key"].endswith(":chunks}")
    for gen, env in ((old, tagged_env), (new, {})):
        done = embedded.cli("compact-generation", str(ORG), str(gen), "--delete", env=env)
        assert done.exit_code == 0, done.output
    assert stored_bytes(embedded, old) == b"untagged\n"
    assert stored_bytes(embedded, new) == b"tagged\n"
    assert embedded.buffer.keyspace.generation_keys(ORG, old) == []
    assert embedded.buffer.keyspace.generation_keys(ORG, new) == []


def test_a_delete_killed_halfway_is_finished_by_the_next_compaction(cluster: Stack) -> None:
    """A compactor killed after its --delete took the list (genbuf's hash marked `ended`)
    but before the app's meta hash gave the life up: the next compaction finishes the
    delete instead of taking the stale count for vanished chunks. No false loss, no key
    left; the next life is a stream of its own."""
    gen = cluster.repository.create_generation(ORG)
    cluster.buffer.push_many(ORG, gen, [b"[1,", b"2]"])
    first = compact(cluster, ORG, gen, delete=True, found=Found(trim_later=True))
    assert first.persisted and first.stream_id is not None
    key = first.key
    protocol = cluster.buffer.protocol
    ack = AckArgs(key, keys.state_key(key), first.stream_id, 2, WhenEmpty.DELETE, Layout.SPLIT)
    protocol.scripts.run(ack)
    assert not cluster.buffer.client.exists(key)  # killed here: meta hash still counts 2
    assert cluster.buffer.client.hget(keys.meta_key(key), "chunk_count") == b"2"
    again = compact(cluster, ORG, gen, delete=True)
    assert "chunk_count_mismatch" not in [issue["code"] for issue in again.issues]
    assert cluster.buffer.keyspace.generation_keys(ORG, gen) == []
    assert stored_bytes(cluster, gen) == b"[1,2]"


def _delete_killed_before_the_drop(
    cluster: Stack, monkeypatch: pytest.MonkeyPatch, gen: int
) -> None:
    """compact-generation --delete killed between release_meta.lua and drop_state.lua
    (however the runner is asked to run it: alone, or in a pipeline)."""
    real_run, real_pipelined = ScriptRunner.run, ScriptRunner.run_pipelined

    def killed_at_the_drop(self: ScriptRunner, call: Any) -> Any:
        if isinstance(call, DropStateArgs):
            raise SimulatedCrash("before drop_state.lua")
        return real_run(self, call)

    def pipelined_killed_at_the_drop(self: ScriptRunner, calls: Any, **options: Any) -> Any:
        if any(isinstance(call, DropStateArgs) for call in calls):
            raise SimulatedCrash("before drop_state.lua")
        return real_pipelined(self, calls, **options)

    monkeypatch.setattr(ScriptRunner, "run", killed_at_the_drop)
    monkeypatch.setattr(ScriptRunner, "run_pipelined", pipelined_killed_at_the_drop)
    with pytest.raises(SimulatedCrash):
        compact(cluster, ORG, gen, delete=True)
    monkeypatch.undo()


def test_a_delete_killed_between_release_and_drop_is_finished_by_the_next_compaction(
    cluster: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compactor killed after the app's meta hash gave the deleted life up but before
    genbuf's hash was dropped: `{K}:genbuf` is left `ended`, with a TTL, and the next
    compaction drops it (no false loss, no key left, the row as it was)."""
    gen = cluster.repository.create_generation(ORG)
    key = cluster.buffer.push_many(ORG, gen, [b"[1,", b"2]"]).key
    _delete_killed_before_the_drop(cluster, monkeypatch, gen)
    client = cluster.buffer.client
    assert not client.exists(key) and not client.exists(keys.meta_key(key))
    assert client.hget(keys.state_key(key), "ended") == b"1"
    assert client.ttl(keys.state_key(key)) > 0
    again = compact(cluster, ORG, gen, delete=True)
    assert again.ok and "chunk_count_mismatch" not in [i["code"] for i in again.issues]
    assert cluster.buffer.keyspace.generation_keys(ORG, gen) == []
    assert not client.exists(keys.state_key(key))
    assert stored_bytes(cluster, gen) == b"[1,2]"


@pytest.mark.parametrize("next_life", [[b"[3]"], [b"[3,", b"4,", b"5]"]], ids=["short", "long"])
def test_a_next_life_after_a_delete_killed_before_the_drop_keeps_its_count(
    cluster: Stack, monkeypatch: pytest.MonkeyPatch, next_life: list[bytes]
) -> None:
    """Killed between the release and the drop, then the app begins a next life (a new
    meta hash) before any retry: the retry's release of the deleted life must leave the
    next life's meta hash alone. It took the deleted life's 2 chunks off it again: a
    count too low ("more chunks than counted"), and a next life of 2 chunks or fewer
    lost its meta hash whole (its finished_at, and a count to tell a loss by)."""
    gen = cluster.repository.create_generation(ORG)
    key = cluster.buffer.push_many(ORG, gen, [b"[1,", b"2]"]).key
    _delete_killed_before_the_drop(cluster, monkeypatch, gen)
    cluster.buffer.push_many(ORG, gen, next_life)  # the app's next life
    cluster.buffer.finish(ORG, gen)
    meta = keys.meta_key(key)
    again = compact(cluster, ORG, gen, delete=False)
    assert again.persisted, again.message
    assert "chunk_count_mismatch" not in [i["code"] for i in again.issues], again.issues
    client = cluster.buffer.client
    assert client.hget(meta, "chunk_count") == str(len(next_life)).encode()
    assert client.hexists(meta, "finished_at")
    assert stored_bytes(cluster, gen) == b"".join(next_life)
    done = compact(cluster, ORG, gen, delete=True)
    assert done.ok and cluster.buffer.keyspace.generation_keys(ORG, gen) == [], done.message


def test_a_compaction_during_a_slot_migration_exits_3_and_a_retry_persists_once(
    cluster: Stack, redis_cluster: LocalCluster
) -> None:
    """compact-generation of an untagged buffer while its slot migrates with the list
    already moved and genbuf's own hash not (a reshard half done): the cluster answers
    TRYAGAIN until redis-py gives up (`TTL exhausted`). One line, exit 3, nothing
    persisted; once the reshard is over, a retry persists every chunk once."""
    gen = cluster.repository.create_generation(ORG)
    cluster.buffer.push_many(ORG, gen, CHUNKS[:2])
    first = compact(cluster, ORG, gen)  # genbuf's {K}:genbuf now holds the stream's id
    assert first.persisted
    cluster.buffer.push_many(ORG, gen, CHUNKS[2:])
    key = cluster.buffer.key_for(ORG, gen, None)
    client = cluster.buffer.client
    assert isinstance(client, redis.RedisCluster)
    slot = client.keyslot(key)
    source = redis_cluster.owner(slot)
    target = next(p for p in redis_cluster.ports if p != source)
    redis_cluster.begin_migration(slot, source, target)
    try:
        redis_cluster.migrate_keys(source, target, [key])  # the list moved, its hash not yet
        done = _genbuf(cluster, "compact-generation", str(ORG), str(gen), "--delete")
    finally:
        redis_cluster.end_migration(slot, source, target)
    assert done.returncode == 3, done.stderr
    said = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(said) <= 2, said
    assert said[0].startswith("error: ") and "slot" in said[0]
    assert stored_bytes(cluster, gen) == b"".join(CHUNKS[:2])  # the first compaction's
    again = _genbuf(cluster, "compact-generation", str(ORG), str(gen), "--delete", "--json")
    assert again.returncode == 0, again.stderr
    assert stored_bytes(cluster, gen) == b"".join(CHUNKS)
    assert cluster.buffer.keyspace.generation_keys(ORG, gen) == []


@pytest.mark.slow
def test_a_worker_fleet_survives_failover_deleted_stream_malformed_event_and_reshard() -> None:
    """Two worker processes blocked on the stream of a 6-node cluster through a forced
    failover (CLUSTER FAILOVER), the stream deleted, `XADD … org abc gen 1` and a
    reshard of the stream's slot: every generation compacted byte-exact (a third of
    them only marked `finished_at`), the malformed event parked, no traceback, no
    worker exits before SIGTERM (then exit 0). See tests/worker_faults.py."""
    require_server("postgres")
    require_cluster_binaries()
    report = run_fleet_faults()
    SUMMARY_LINES.extend(f"worker faults: {line}" for line in report.lines())
    assert report.exact == report.generations == 24, report.lines()
    assert report.tracebacks == 0 and report.alive_until_stopped, report.lines()
    assert report.exit_codes == [0, 0]
    assert report.outcomes.get("interrupted", 0) >= 3  # failover, deletion, reshard
    assert report.outcomes.get("parked") == 1 and len(report.parked) == 1
    assert "abc" in report.parked[0]["fields"]


def test_a_workers_read_goes_to_the_streams_node_in_one_trip(
    cluster: Stack, redis_cluster: LocalCluster
) -> None:
    """On a cluster a worker's read (XACK + XDEL of what it finished, then XREADGROUP)
    is one pipeline to the stream's node: redis-py's cluster client asked every node
    for XREADGROUP's keys (COMMAND GETKEYS) before each read, a round trip more."""
    events = cluster.buffer.events
    events.ensure_group()
    for gen in (1, 2):
        events.announce(7, gen)

    def getkeys() -> int:
        calls = 0
        for port in redis_cluster.ports:
            stats = redis.Redis(port=port).info("commandstats")
            calls += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
        return calls

    before = getkeys()
    first = events.read("c1", 10, 10)
    second = events.read("c1", 10, 10, done=[event.entry for event in first.events])
    assert [e.generation_id for e in first.events] == [1, 2] and second.events == []
    assert getkeys() == before
    assert events.queued() == set()  # both acknowledged, with the second read


def test_commands_sent_to_a_node_that_no_longer_serves_the_key_follow_the_cluster(
    cluster: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Script calls, pipelines by node and the producer's finish() go straight to a key's
    node; a node that answers MOVED (here: every key sent to the wrong primary, as
    after a reshard) has them sent again through the cluster client, nothing lost or
    refused."""
    from genbuffer.redis.direct import on_key_node, pipeline_on_nodes  # noqa: PLC0415

    client: Any = cluster.buffer.client
    target = cluster.buffer.protocol.target
    keys_ = [f"{{{tag}}}:direct" for tag in ("a", "b", "c", "d")]
    right = {key: client.get_node_from_key(key).name for key in keys_}
    assert len(set(right.values())) > 1  # several nodes
    primaries = list(client.get_primaries())

    def wrong(key: str, *args: Any, **kwargs: Any) -> Any:
        return next(node for node in primaries if node.name != right[key])

    monkeypatch.setattr(client, "get_node_from_key", wrong)
    assert on_key_node(target, keys_[1], lambda c: c.set(keys_[1], 1))
    replies = pipeline_on_nodes(target, [(key, ("SET", key, key)) for key in keys_])
    assert replies == [True] * len(keys_)
    assert on_key_node(target, keys_[0], lambda c: c.get(keys_[0])) == keys_[0].encode()
    gen = cluster.repository.create_generation(ORG)
    monkeypatch.undo()
    key = cluster.buffer.push_many(ORG, gen, [b"[1]"]).key
    for name in (key, keys.meta_key(key), cluster.buffer.events.stream):
        right[name] = client.get_node_from_key(name).name
    monkeypatch.setattr(client, "get_node_from_key", wrong)
    cluster.buffer.finish(ORG, gen)
    monkeypatch.undo()
    assert client.hexists(keys.meta_key(key), "finished_at")
    assert (ORG, gen) in cluster.buffer.events.queued()


def test_the_sweepers_looks_go_to_each_node_at_once(
    cluster: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle rule's look at every buffer a sweep finds (observe.lua) is one pipeline
    to each node, not a round trip a buffer: a sweep of 400 open buffers spent a third
    of a cluster worker's time in them."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from genbuffer.redis.scripts import ScriptRunner  # noqa: PLC0415

    names = [cluster.buffer.push_many(ORG, gen, [b"x"]).key for gen in range(1, 9)]
    alone: list[object] = []
    original = ScriptRunner.run
    monkeypatch.setattr(
        ScriptRunner, "run", lambda self, call: alone.append(call) or original(self, call)
    )
    looks = cluster.buffer.scan.observe(names, datetime.now(UTC))
    assert alone == [] and all(looks[name] is not None for name in names)


@pytest.mark.parametrize("moved", [False, True], ids=["on-the-old-node", "moved"])
@pytest.mark.parametrize("tagged", [False, True], ids=["split", "tagged"])
def test_a_buffer_whose_slot_migrates_is_found_compacted_and_deleted(
    cluster: Stack, redis_cluster: LocalCluster, tagged: bool, moved: bool
) -> None:
    """Mid-reshard, a buffer's keys of the migrating slot still on the old node, or all
    already on the new one (which the old node's ASK leads to, through the cluster
    client): found, looked at, compacted byte-exact and deleted while the slot migrates,
    nothing left; a pipeline mixing moved keys, keys not moved and another node's gets
    every reply in order. ack.lua deleted the list it had just emptied together with its
    hash (DEL of two keys): a node whose slot migrates refuses a script's command on a
    key it no longer holds (ASK or TRYAGAIN, 'Script attempted to access a non local
    key'), so the acknowledgement stopped halfway (the list trimmed, the hash left) and
    compact-generation --delete printed a traceback, exit 1."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from genbuffer.redis.direct import pipeline_on_nodes  # noqa: PLC0415

    stack = cluster
    if tagged:
        cluster.env["GENERATION_KEY_TAGS"] = "true"
        stack = Stack(name="cluster", env=cluster.env, tmp_path=cluster.tmp_path)
    try:
        gen = stack.repository.create_generation(ORG)
        key = stack.buffer.push_many(ORG, gen, CHUNKS).key
        stack.buffer.finish(ORG, gen)
        client: Any = stack.buffer.client
        slot = client.keyslot(key)
        names = stack.buffer.keyspace.generation_keys(ORG, gen)
        in_slot = [name for name in names if client.keyslot(name) == slot]
        source = redis_cluster.owner(slot)
        target = next(p for p in redis_cluster.ports if p != source)
        other = next(k for k in (f"{{o{i}}}" for i in range(50)) if client.keyslot(k) != slot)
        stay = f"{key}:stay" if tagged else f"{{{key}}}:stay"  # same slot, never moved
        client.set(other, b"o")
        client.set(stay, b"s")
        redis_cluster.begin_migration(slot, source, target)
        try:
            if moved:
                redis_cluster.migrate_keys(source, target, in_slot)
            sent = [(key, ("LLEN", key)), (stay, ("GET", stay)), (other, ("GET", other))]
            replies = pipeline_on_nodes(stack.buffer.protocol.target, sent)
            assert replies == [len(CHUNKS), b"s", b"o"], replies
            assert gen in {found.generation_id for found in stack.buffer.scan.discover()}
            assert stack.buffer.scan.observe([key], datetime.now(UTC))[key] is not None
            done = _genbuf(stack, "compact-generation", str(ORG), str(gen), "--delete")
            assert done.returncode == 0, done.stderr
            assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
        finally:
            redis_cluster.end_migration(slot, source, target)
        assert stored_bytes(stack, gen) == b"".join(CHUNKS)
        assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
        client.delete(stay, other)
    finally:
        if tagged:
            stack.close()


def test_a_script_refused_on_a_moving_slot_is_an_outage_of_one_line() -> None:
    """A node refusing a script's key while its slot migrates ("Script attempted to
    access a non local key") is RedisUnavailable (exit 3, run again), not a traceback."""
    from genbuffer.errors import RedisUnavailable  # noqa: PLC0415
    from genbuffer.redis.connection import redis_errors  # noqa: PLC0415

    refusal = redis.exceptions.ResponseError(
        "Script attempted to access a non local key in a cluster node script: @user_script:46: ..."
    )
    with (
        pytest.raises(RedisUnavailable, match="slot is moving") as raised,
        redis_errors("redis://127.0.0.1:7000"),
    ):
        raise refusal
    assert raised.value.exit_code == 3


def test_a_trim_waits_for_its_completion_event_when_the_streams_primary_dies(
    tmp_path: Path, pg_database: str
) -> None:
    """kill -9 of the primary holding the completion stream as a committed compaction
    sends its event and its trim (one pipeline to each node): the trim, on another
    node, does not go out without the event. The run exits 3 with the buffer whole,
    and once the node is back the next run announces, then trims (at least once:
    before, the list was trimmed, no event was ever added, and no run announced it)."""
    require_cluster_binaries()
    nodes = LocalCluster(tmp_path / "cluster").start()
    env = {
        "REDIS_CLUSTER_NODES": nodes.nodes,
        "REDIS_PREFIX": "ev_",
        "DATABASE_URL": pg_database,
        "METADATA_VALIDATION_LOG": str(tmp_path / "audit.log"),
    }
    stack = Stack(name="cluster", env=env, tmp_path=tmp_path)
    try:
        client = stack.buffer.client
        stream = keys.completions_key("ev_")
        holder = nodes.owner(int(client.keyslot(stream)))
        gen = stack.repository.create_generation(ORG)
        while nodes.owner(int(client.keyslot(stack.buffer.key_for(ORG, gen, None)))) == holder:
            gen = stack.repository.create_generation(ORG)
        key = stack.buffer.push_many(ORG, gen, [b"[1,", b"2]"]).key
        for port in nodes.ports:  # as a worker that ran before has them
            redis.Redis(port=port).script_load(load_script("ack"))

        def kill_holder(step: str) -> None:
            if step == "before_ack":
                nodes.kill(holder)

        faults = FaultPlan(on_step=kill_holder)
        with pytest.raises(RedisUnavailable):
            compact(stack, ORG, gen, delete=True, config={"faults": faults})
        assert stored_bytes(stack, gen) == b"[1,2]"
        assert client.lrange(key, 0, -1) == [b"[1,", b"2]"]  # not trimmed without its event
        nodes.restart(holder)
        nodes.wait_ok()
        again = compact(stack, ORG, gen, delete=True)
        assert again.deleted and again.announced, again.message
        told = [entry for _, entry in client.xrange(stream) if entry[b"gen"] == str(gen).encode()]
        assert len(told) == 1 and told[0][b"outcome"] == b"persisted"
        assert stack.buffer.keyspace.generation_keys(ORG, gen) == []
    finally:
        stack.close()
        nodes.stop()


def test_the_mark_of_a_release_is_kept_briefly_once_the_delete_is_done(cluster: Stack) -> None:
    """A split delete done whole leaves its release's mark (release_meta.lua) only
    REMEMBER_AFTER_DROP seconds more, not the list's TTL (a day: ~184 bytes held a
    generation under noeviction); alone and in a batch."""
    gens = [cluster.repository.create_generation(ORG) for _ in range(3)]
    for gen in gens:
        cluster.buffer.push_many(ORG, gen, [b"[1]"])
    compact(cluster, ORG, gens[0], delete=True)  # alone
    for gen in gens[1:]:
        cluster.buffer.finish(ORG, gen)
    done = json.loads(cluster.cli("compact-pending", "--json").stdout)  # a batch
    assert done["compacted"] == 2, done
    client = cluster.buffer.client
    for gen in gens:
        mark = keys.released_key(keys.meta_key(cluster.buffer.key_for(ORG, gen, None)))
        assert 0 < client.ttl(mark) <= REMEMBER_AFTER_DROP, (gen, client.ttl(mark))
