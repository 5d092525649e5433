"""Every path that writes a buffer leaves the same state: values, counters, ids and TTLs.

One push script (push.lua) and the key layouts that send it (genbuffer.redis.layout):
on one server and for the hash-tagged template on a cluster one call per batch (a
single call for push_chunk, pipelined batches for push_many, each sequenced or sent
once), and for the app's untagged keys on a cluster the split layout (the list side,
then the count). The paths: push_chunk and push_many, each with and without sequence
numbers, push_many under the tagged template, and `genbuf push`; on fakeredis, the
real Redis and a real Redis Cluster. The TTL rules they must share are written in
push.lua (and described in genbuffer.redis.meta).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from genbuffer import keys
from genbuffer.errors import OperationFailed
from genbuffer.redis.layout import OneSlot, Split, layout_of
from genbuffer.redis.scripts import RefusedAfter, ScriptRunner
from tests.conftest import Stack
from tests.helpers import sequenced

ON_CLUSTER = True  # the untagged keys there are the split layout's
ORG, SCENARIO, TTL = 12, 345, 86400
SLACK = 5  # seconds a test may take between a push and reading a TTL
BACKENDS = pytest.mark.backends("embedded", "servers", "cluster")


class Path_:
    """One push path: how it pushes a batch of chunks that continue the stream."""

    def __init__(
        self, name: str, push: Callable[[Stack, int, list[bytes], int], None], *, tagged: bool
    ) -> None:
        self.name = name
        self.push = push
        self.tagged = tagged  # needs list and meta hash in one slot (on a cluster: tags)

    def __repr__(self) -> str:
        return self.name

    def prepare(self, stack: Stack) -> Stack:
        """The stack as this path needs it (call before using the buffer)."""
        if self.tagged:
            stack.env["GENERATION_KEY_TAGS"] = "true"
            return sequenced(stack)
        return stack


def _push_chunk(stack: Stack, gen: int, chunks: list[bytes], _: int) -> None:
    for chunk in chunks:
        stack.buffer.push_chunk(ORG, gen, chunk, SCENARIO)


def _push_chunk_seq(stack: Stack, gen: int, chunks: list[bytes], seq: int) -> None:
    for offset, chunk in enumerate(chunks):
        stack.buffer.push_chunk(ORG, gen, chunk, SCENARIO, seq=seq + offset)


def _push_many(stack: Stack, gen: int, chunks: list[bytes], _: int) -> None:
    stack.buffer.push_many(ORG, gen, chunks, SCENARIO)


def _push_many_seq(stack: Stack, gen: int, chunks: list[bytes], seq: int) -> None:
    stack.buffer.push_many(ORG, gen, chunks, SCENARIO, seq=seq)


def _genbuf_push(stack: Stack, gen: int, chunks: list[bytes], _: int) -> None:
    result = stack.cli(
        "push", str(ORG), str(gen), "--scenario-id", str(SCENARIO), input=b"".join(chunks)
    )
    assert result.exit_code == 0, result.output


PATHS = [
    Path_("push_chunk", _push_chunk, tagged=False),
    Path_("push_chunk_seq", _push_chunk_seq, tagged=True),
    Path_("push_many", _push_many, tagged=False),
    Path_("push_many_tagged", _push_many, tagged=True),
    Path_("push_many_seq", _push_many_seq, tagged=True),
    Path_("genbuf_push", _genbuf_push, tagged=False),
]


def _key(stack: Stack, path: Path_, gen: int) -> str:
    """The chunks key ``path`` writes, and the layout it takes checked against the stack's."""
    key = path.prepare(stack).buffer.key_for(ORG, gen, SCENARIO)
    split = stack.name == "cluster" and not path.tagged
    assert isinstance(layout_of(stack.buffer.target, key), Split if split else OneSlot)
    return key


def _state(stack: Stack, key: str) -> tuple[list[bytes], dict[str, str], int, int]:
    """The list, every field of the buffer's hashes (genbuf's own last), the list's TTL
    and the shortest of its hashes' TTLs."""
    client = stack.buffer.client
    hashes = layout_of(stack.buffer.target, key).hashes(key)
    meta: dict[str, str] = {}
    for name in hashes:
        meta.update({k.decode(): v.decode() for k, v in client.hgetall(name).items()})
    return (
        list(client.lrange(key, 0, -1)),
        meta,
        int(client.ttl(key)),
        min(int(client.ttl(name)) for name in hashes),
    )


def _assert_counted(meta: dict[str, str], chunks: list[bytes]) -> None:
    assert meta["chunk_count"] == str(len(chunks))
    assert meta["bytes"] == str(sum(map(len, chunks)))
    assert (meta["organization_id"], meta["scenario_id"], meta["generation_id"]) == (
        str(ORG),
        str(SCENARIO),
        meta["generation_id"],
    )
    assert meta["stream_id"]
    assert meta["first_chunk_at"] <= meta["last_chunk_at"]


def _full(ttl: int) -> bool:
    return TTL - SLACK <= ttl <= TTL


@BACKENDS
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_a_fresh_buffer(stack: Stack, path: Path_) -> None:
    """Two pushes: the chunks in order, counted, with the ids and the full TTL on both keys."""
    gen = 1000 + PATHS.index(path)
    key = _key(stack, path, gen)
    path.push(stack, gen, [b"a\n", b"bb\n"], 0)
    path.push(stack, gen, [b"ccc\n"], 2)
    values, meta, list_ttl, meta_ttl = _state(stack, key)
    assert values == [b"a\n", b"bb\n", b"ccc\n"]
    _assert_counted(meta, values)
    assert meta["generation_id"] == str(gen)
    assert _full(list_ttl) and _full(meta_ttl), (list_ttl, meta_ttl)


@BACKENDS
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_a_list_recreated_under_a_live_meta_hash(stack: Stack, path: Path_) -> None:
    """The list went (expired, deleted) while its meta hash lived on with less time left:
    the push that recreates the list gives the meta hash at least the full TTL again."""
    gen = 1100 + PATHS.index(path)
    key = _key(stack, path, gen)
    path.push(stack, gen, [b"a\n"], 0)
    stack.buffer.client.delete(key)
    stack.buffer.client.expire(keys.meta_key(key), 100)
    path.push(stack, gen, [b"b\n"], 1)
    values, meta, list_ttl, meta_ttl = _state(stack, key)
    assert values == [b"b\n"]
    assert meta["chunk_count"] == "2"
    assert _full(list_ttl) and _full(meta_ttl), (list_ttl, meta_ttl)


@BACKENDS
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_keys_left_without_a_ttl_get_one(stack: Stack, path: Path_) -> None:
    """A key some other writer left without a TTL gets the configured one at the next push."""
    gen = 1200 + PATHS.index(path)
    key = _key(stack, path, gen)
    path.push(stack, gen, [b"a\n"], 0)
    stack.buffer.client.persist(key)
    stack.buffer.client.persist(keys.meta_key(key))
    path.push(stack, gen, [b"b\n"], 1)
    values, meta, list_ttl, meta_ttl = _state(stack, key)
    assert values == [b"a\n", b"b\n"]
    _assert_counted(meta, values)
    assert _full(list_ttl) and _full(meta_ttl), (list_ttl, meta_ttl)


@BACKENDS
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_a_push_does_not_refresh_ttls(stack: Stack, path: Path_) -> None:
    """A TTL set earlier is left as it is: an abandoned stream's buffer expires on time."""
    gen = 1300 + PATHS.index(path)
    key = _key(stack, path, gen)
    path.push(stack, gen, [b"a\n"], 0)
    stack.buffer.client.expire(key, 100)
    stack.buffer.client.expire(keys.meta_key(key), 200)
    path.push(stack, gen, [b"b\n"], 1)
    values, meta, list_ttl, meta_ttl = _state(stack, key)
    assert values == [b"a\n", b"b\n"]
    _assert_counted(meta, values)
    assert 100 - SLACK <= list_ttl <= 100 and 200 - SLACK <= meta_ttl <= 200


def test_the_lua_scripts_use_only_the_meta_fields_defined_in_one_place() -> None:
    """Every hash field a Lua script names is one of genbuffer.redis.meta's FIELDS."""
    import re  # noqa: PLC0415
    from importlib.resources import files  # noqa: PLC0415

    from genbuffer.redis import meta  # noqa: PLC0415

    named: set[str] = set()
    for script in (files("genbuffer") / "lua").iterdir():
        if not script.name.endswith(".lua"):
            continue  # the typed calls beside the scripts, their caches
        source = script.read_text(encoding="utf-8")
        calls = re.findall(r"redis\.call\('H[A-Z]+', (?:KEYS\[\d\]|[a-z_]+), ([^)]*)\)", source)
        for arguments in calls:
            named |= set(re.findall(r"'([a-z_]+)'(?!\s*\.\.)", arguments))
    assert named, "no field found: the pattern no longer matches the scripts"
    assert named <= meta.FIELDS, named - meta.FIELDS


@BACKENDS
@pytest.mark.parametrize("tagged", [False, True], ids=["untagged", "tagged"])
def test_finish_marks_only_a_buffer_that_exists(stack: Stack, tagged: bool) -> None:
    """finish (push.lua's finish step, as the key's layout sends it): `finished_at`, and
    the TTL on a meta hash left without one; a list the app wrote alone (no meta hash)
    is marked too; where neither key exists (a retried finish after a compaction deleted
    the buffer) nothing comes back."""
    path = Path_("finish", _push_many, tagged=tagged)
    gen = 1400 + tagged
    key, meta = _key(stack, path, gen), keys.meta_key(_key(stack, path, gen))
    client = stack.buffer.client
    stack.buffer.push_many(ORG, gen, [b"a\n"], SCENARIO)
    client.persist(meta)
    stack.buffer.finish(ORG, gen, SCENARIO)
    assert client.hget(meta, "finished_at") is not None
    assert _full(int(client.ttl(meta)))
    client.delete(meta)  # the app's RPUSH alone: a list without meta hash
    stack.buffer.finish(ORG, gen, SCENARIO)
    assert client.hget(meta, "finished_at") is not None
    client.delete(key, *layout_of(stack.buffer.target, key).hashes(key))
    stack.buffer.finish(ORG, gen, SCENARIO)
    assert not client.exists(meta)


@pytest.mark.backends("embedded", "servers")
def test_a_meta_key_of_another_type_takes_the_rpushes_back(stack: Stack) -> None:
    """push_many's one-slot transaction: the RPUSHes run, then push.lua finds a string
    where the meta hash goes (WRONGTYPE). It takes the chunks back (nobody can have read
    them: the transaction runs as one), so the list is as it was, TTL included, and the
    push is one line saying so (they were left in the list, uncounted)."""
    gen = stack.repository.create_generation(ORG)
    key = stack.buffer.key_for(ORG, gen, SCENARIO)
    stack.buffer.client.rpush(key, b"old")  # a list without TTL, as a hand-made one
    stack.buffer.client.set(keys.meta_key(key), "not a hash")
    with pytest.raises(OperationFailed) as raised:
        stack.buffer.push_many(ORG, gen, [b"a", b"bc", b"def"], SCENARIO)
    assert "another type" in raised.value.message and "nothing was appended" in (
        raised.value.message
    )
    assert stack.buffer.client.lrange(key, 0, -1) == [b"old"]
    assert stack.buffer.client.ttl(key) == -1
    result = stack.cli("push", str(ORG), str(gen), "--scenario-id", str(SCENARIO), input=b"x")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "another type" in result.output and len(result.output.strip().splitlines()) <= 2
    assert stack.buffer.client.lrange(key, 0, -1) == [b"old"]


def test_a_count_refused_after_the_rpushes_ran_says_what_is_where(
    embedded: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """push_many's one-slot transaction: the RPUSHes run, then push.lua's call is
    refused (an error reply such as OOM inside the script, which no fake server gives:
    the RPUSHes run here for real and the refusal is raised after them). One
    OperationFailed that says the chunks are in the buffer and not counted; no chunk is
    pushed twice and nothing is lost."""
    gen = embedded.repository.create_generation(ORG)
    key = embedded.buffer.key_for(ORG, gen, SCENARIO)
    client = embedded.buffer.client

    def refused_after(self: ScriptRunner, commands: Any, call: Any) -> Any:
        for command in commands:
            client.execute_command(*command)
        raise RefusedAfter(redis.exceptions.ResponseError("OOM command not allowed"))

    monkeypatch.setattr(ScriptRunner, "run_after", refused_after)
    chunks = [b"a", b"bc", b"def"]
    with pytest.raises(OperationFailed) as raised:
        embedded.buffer.push_many(ORG, gen, chunks, SCENARIO)
    error = raised.value
    assert f"refused to count a push to {key}" in error.message and "OOM" in error.message
    assert "3 chunks appended, the last 3 not counted in its meta hash" in error.message
    assert error.hint is not None and "push only the rest" in error.hint
    assert client.lrange(key, 0, -1) == chunks
