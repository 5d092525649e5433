"""Every path that writes a buffer leaves the same state: values, counters, ids and TTLs.

The paths: push_chunk (push_one.lua), push_chunk with a sequence number and
push_many with one (push.lua), push_many (MULTI/EXEC on Redis 7+), push_many on a
server without EXPIRE NX (push.lua unsequenced) and `genbuf push`. The TTL rules
they must share are written in genbuffer.redis.meta.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from genbuffer import keys
from genbuffer.redis import GenerationBuffer
from tests.conftest import Stack

ORG, SCENARIO, TTL = 12, 345, 86400
SLACK = 5  # seconds a test may take between a push and reading a TTL


class Path_:
    """One push path: how it pushes a batch of chunks that continue the stream."""

    def __init__(self, name: str, push: Callable[[Stack, int, list[bytes], int], None]) -> None:
        self.name = name
        self.push = push

    def __repr__(self) -> str:
        return self.name


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


def _push_many_before_redis_7(stack: Stack, gen: int, chunks: list[bytes], _: int) -> None:
    buffer: GenerationBuffer = stack.buffer
    buffer._expire_nx = False  # what the probe finds on Redis 6: the push.lua path
    buffer.push_many(ORG, gen, chunks, SCENARIO)


def _genbuf_push(stack: Stack, gen: int, chunks: list[bytes], _: int) -> None:
    result = stack.cli(
        "push", str(ORG), str(gen), "--scenario-id", str(SCENARIO), input=b"".join(chunks)
    )
    assert result.exit_code == 0, result.output


PATHS = [
    Path_("push_chunk", _push_chunk),
    Path_("push_chunk_seq", _push_chunk_seq),
    Path_("push_many", _push_many),
    Path_("push_many_seq", _push_many_seq),
    Path_("push_many_scripted", _push_many_before_redis_7),
    Path_("genbuf_push", _genbuf_push),
]


def _state(stack: Stack, key: str) -> tuple[list[bytes], dict[str, str], int, int]:
    client = stack.buffer.client
    meta = {k.decode(): v.decode() for k, v in client.hgetall(keys.meta_key(key)).items()}
    return (
        list(client.lrange(key, 0, -1)),
        meta,
        int(client.ttl(key)),
        int(client.ttl(keys.meta_key(key))),
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


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_a_fresh_buffer(redis_stack: Stack, path: Path_) -> None:
    """Two pushes: the chunks in order, counted, with the ids and the full TTL on both keys."""
    gen = 1000 + PATHS.index(path)
    key = redis_stack.buffer.key_for(ORG, gen, SCENARIO)
    path.push(redis_stack, gen, [b"a\n", b"bb\n"], 0)
    path.push(redis_stack, gen, [b"ccc\n"], 2)
    values, meta, list_ttl, meta_ttl = _state(redis_stack, key)
    assert values == [b"a\n", b"bb\n", b"ccc\n"]
    _assert_counted(meta, values)
    assert meta["generation_id"] == str(gen)
    assert _full(list_ttl) and _full(meta_ttl), (list_ttl, meta_ttl)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_a_list_recreated_under_a_live_meta_hash(redis_stack: Stack, path: Path_) -> None:
    """The list went (expired, deleted) while its meta hash lived on with less time left:
    the push that recreates the list gives the meta hash at least the full TTL again."""
    gen = 1100 + PATHS.index(path)
    key = redis_stack.buffer.key_for(ORG, gen, SCENARIO)
    path.push(redis_stack, gen, [b"a\n"], 0)
    redis_stack.buffer.client.delete(key)
    redis_stack.buffer.client.expire(keys.meta_key(key), 100)
    path.push(redis_stack, gen, [b"b\n"], 1)
    values, meta, list_ttl, meta_ttl = _state(redis_stack, key)
    assert values == [b"b\n"]
    assert meta["chunk_count"] == "2"
    assert _full(list_ttl) and _full(meta_ttl), (list_ttl, meta_ttl)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_keys_left_without_a_ttl_get_one(redis_stack: Stack, path: Path_) -> None:
    """A key some other writer left without a TTL gets the configured one at the next push."""
    gen = 1200 + PATHS.index(path)
    key = redis_stack.buffer.key_for(ORG, gen, SCENARIO)
    path.push(redis_stack, gen, [b"a\n"], 0)
    redis_stack.buffer.client.persist(key)
    redis_stack.buffer.client.persist(keys.meta_key(key))
    path.push(redis_stack, gen, [b"b\n"], 1)
    values, meta, list_ttl, meta_ttl = _state(redis_stack, key)
    assert values == [b"a\n", b"b\n"]
    _assert_counted(meta, values)
    assert _full(list_ttl) and _full(meta_ttl), (list_ttl, meta_ttl)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_a_push_does_not_refresh_ttls(redis_stack: Stack, path: Path_) -> None:
    """A TTL set earlier is left as it is: an abandoned stream's buffer expires on time."""
    gen = 1300 + PATHS.index(path)
    key = redis_stack.buffer.key_for(ORG, gen, SCENARIO)
    path.push(redis_stack, gen, [b"a\n"], 0)
    redis_stack.buffer.client.expire(key, 100)
    redis_stack.buffer.client.expire(keys.meta_key(key), 200)
    path.push(redis_stack, gen, [b"b\n"], 1)
    values, meta, list_ttl, meta_ttl = _state(redis_stack, key)
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
        calls = re.findall(r"redis\.call\('H[A-Z]+', KEYS\[\d\], ([^)]*)\)", source)
        for arguments in calls:
            named |= set(re.findall(r"'([a-z_]+)'(?!\s*\.\.)", arguments))
    assert named, "no field found: the pattern no longer matches the scripts"
    assert named <= meta.FIELDS, named - meta.FIELDS
