"""Every Lua script's typed call matches its header: KEYS and ARGV, named, in order.

Each ``genbuffer/lua/<name>.lua`` declares its keys and arguments in its header
(``-- KEYS[1]  chunks_key: …``, ``-- ARGV[8…] chunks: …`` for a variable tail);
``genbuffer/lua/<name>.py`` holds the dataclass that builds them. An argument added,
dropped, renamed or moved on one side and not the other fails here, before any
script receives an argument in the wrong place. The runner's NOSCRIPT handling is
checked on the in-process Redis (fakeredis) too.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbuffer.errors import RedisUnavailable
from genbuffer.lua import ScriptCall, encode
from genbuffer.lua.ack import AckArgs, Layout, WhenEmpty
from genbuffer.lua.drop_state import DropStateArgs
from genbuffer.lua.fail import FailArgs, SetAside
from genbuffer.lua.observe import ObserveArgs
from genbuffer.lua.push import PushArgs, PushHead, Step
from genbuffer.lua.release_meta import ReleaseMetaArgs
from genbuffer.lua.snapshot import Counter, MetaHash, Mode, SnapshotArgs, SplitTry
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import RedisTarget
from genbuffer.redis.scripts import ScriptRunner
from tests.support.urls import REPO_ROOT

LUA = REPO_ROOT / "genbuffer" / "lua"
SCRIPTS = sorted(path.stem for path in LUA.glob("*.lua"))
DECLARED = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(…)?\]\s+(\w+):")
USED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")

# one call of each script, every value distinct, so that two arguments swapped show
EXAMPLES: dict[str, ScriptCall[object]] = {
    "ack": AckArgs("k:chunks", "k:meta", "s1", 7, WhenEmpty.DELETE, Layout.SPLIT),
    "drop_state": DropStateArgs("{k}:genbuf", "s2"),
    "fail": FailArgs(
        "k:meta", "k:chunks", "boom", 3, "2024-01-01T00:00:00Z", 86400, SetAside.ORPHANED
    ),
    "observe": ObserveArgs("k:chunks", "k:meta", "2024-01-02T00:00:00Z", 3600),
    "push": PushArgs(
        "k:chunks", "k:meta", Step.COUNT, 100, "now", 1, None, 3, 40, 11, 12, 13, (b"a", "b")
    ),
    "release_meta": ReleaseMetaArgs("k:meta", "{k:meta}:released", 12, "s3", 660),
    "snapshot": SnapshotArgs(
        "k:chunks",
        "{k}:genbuf",
        "fresh",
        600,
        104,
        "held-stream",
        13,
        2000,
        Mode.READ_ONLY,
        5,
        "42",
        MetaHash.EXISTS,
        SplitTry.FIRST,
        (14, 15),
    ),
}


@dataclass(frozen=True)
class Header:
    """What a script's header declares: names of KEYS[1…], ARGV[1…] and the tail."""

    keys: tuple[str, ...]
    argv: tuple[str, ...]
    tail: str | None
    tail_at: int | None


def read_header(source: str) -> Header:
    """The KEYS/ARGV lines of a script's header, checked to be numbered 1, 2, …"""
    keys: list[str] = []
    argv: list[str] = []
    tail: tuple[int, str] | None = None
    for line in source.splitlines():
        found = DECLARED.match(line)
        if found is None:
            continue
        kind, number, more, name = found.groups()
        assert tail is None, f"{line!r} comes after the variable tail"
        declared = keys if kind == "KEYS" else argv
        if more:
            assert kind == "ARGV", line
            tail = (int(number), name)
        else:
            assert int(number) == len(declared) + 1, f"{line!r}: not numbered in order"
            declared.append(name)
    if tail is not None:
        assert tail[0] == len(argv) + 1, (
            f"the tail ARGV[{tail[0]}…] does not follow ARGV[{len(argv)}]"
        )
    return Header(tuple(keys), tuple(argv), tail and tail[1], tail and tail[0])


def call_class(name: str) -> type[ScriptCall[object]]:
    """The one ScriptCall of genbuffer/lua/<name>.py whose SCRIPT is ``name``."""
    module = importlib.import_module(f"genbuffer.lua.{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ScriptCall)
        and value is not ScriptCall
        and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"genbuffer/lua/{name}.py: {found}"
    assert name == found[0].SCRIPT
    return found[0]


def check_call(call: ScriptCall[object], header: Header) -> None:
    """``call`` declares what ``header`` does, and its keys()/argv() produce exactly that."""
    cls = type(call)
    assert header.keys == cls.KEYS, f"{cls.__name__}.KEYS: {cls.KEYS} != header {header.keys}"
    assert header.argv == cls.ARGV, f"{cls.__name__}.ARGV: {cls.ARGV} != header {header.argv}"
    assert header.tail == cls.TAIL, f"{cls.__name__}.TAIL: {cls.TAIL} != header {header.tail}"
    names = {f.name for f in dataclasses.fields(call)}
    declared = [*header.keys, *header.argv, *([header.tail] if header.tail else [])]
    assert sorted(declared) == sorted(names), f"{cls.__name__}: fields {names} != {declared}"
    assert call.keys() == [getattr(call, name) for name in header.keys]
    argv = call.argv()
    tail = list(getattr(call, header.tail)) if header.tail else []
    assert len(argv) == len(header.argv) + len(tail)
    expected = [encode(getattr(call, name)) for name in header.argv] + [encode(v) for v in tail]
    assert argv == expected, f"{cls.__name__}.argv() is not in the header's order"
    # what goes to Redis: text, bytes or integers (an enum as its value, None as '')
    assert all(type(value) in (str, bytes, int) for value in argv), argv


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_has_a_typed_call_matching_its_header(name: str) -> None:
    """KEYS/ARGV of the header == the dataclass's, in order; keys()/argv() produce them."""
    header = read_header((LUA / f"{name}.lua").read_text(encoding="utf-8"))
    cls = call_class(name)
    assert name in EXAMPLES, f"add an example call of {name}.lua to EXAMPLES"
    assert type(EXAMPLES[name]) is cls
    check_call(EXAMPLES[name], header)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_uses_only_what_its_header_declares(name: str) -> None:
    """No KEYS[n] or ARGV[n] in a script's code beyond its header (the tail is read by
    position from ``#ARGV``)."""
    source = (LUA / f"{name}.lua").read_text(encoding="utf-8")
    header = read_header(source)
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    for kind, number in USED.findall(code):
        declared = header.keys if kind == "KEYS" else header.argv
        assert 1 <= int(number) <= len(declared), f"{name}.lua uses {kind}[{number}]"


def test_a_mismatched_argv_is_caught() -> None:
    """A call class whose ARGV differs from the header (two arguments swapped) fails."""
    header = read_header((LUA / "ack.lua").read_text(encoding="utf-8"))

    @dataclass(frozen=True)
    class Swapped(AckArgs):
        ARGV = ("persisted", "stream_id", "when_empty", "layout")

    swapped = Swapped("k:chunks", "k:meta", "s1", 7, WhenEmpty.DELETE)
    with pytest.raises(AssertionError, match="ARGV"):
        check_call(swapped, header)


def test_the_push_calls_fill_the_arguments_of_their_step() -> None:
    """push.lua's steps: what each constructor puts in KEYS and ARGV."""
    head = PushHead(60, "now", 1, None, 2)
    one = PushArgs.push("k", "k:meta", head, (b"a",), 1, seq=5)
    assert one.keys() == ["k", "k:meta"]
    assert one.argv() == ["push", 60, "now", 1, "", 2, 5, 1, "", "", b"a"]
    listed = PushArgs.list_side("k", "{k}:genbuf", head, (b"a", b"bc"), 3)
    assert listed.keys() == ["k", "{k}:genbuf"]
    assert listed.argv() == ["list", 60, "now", 1, "", 2, "", 3, "", "", b"a", b"bc"]
    counted = PushArgs.count_side("k:meta", head, 2, 3, 7)
    assert counted.keys() == ["k:meta", "k:meta"]
    assert counted.argv() == ["count", 60, "now", 1, "", 2, "", 3, 2, 7]
    rpushed = PushArgs.rpushed("k", "k:meta", head, 2, 3)
    assert rpushed.argv() == ["rpushed", 60, "now", 1, "", 2, "", 3, 2, ""]
    finished = PushArgs.finish("k:meta", "k:meta", head, 4)
    assert finished.argv() == ["finish", 60, "now", 1, "", 2, "", 0, "", 4]


def test_set_aside_names_the_meta_fields() -> None:
    """fail.lua's ARGV[5] values are genbuffer.redis.meta's field names."""
    assert SetAside.QUARANTINED == fields.QUARANTINED_AT
    assert SetAside.ORPHANED == fields.ORPHANED_AT
    assert Counter.NONE == "-" and Counter.IN_STATE_HASH == ""


def test_the_runner_reloads_after_noscript_alone_and_in_a_pipeline() -> None:
    """SCRIPT FLUSH between calls: the next call, and a pipeline of calls, load the
    script again; a server that keeps flushing is reported (exit 3)."""
    client = fakeredis.FakeRedis()
    runner = ScriptRunner(RedisTarget(client, url="memory://t"))
    head = PushHead(60, "now", 1, None, 2)

    def push(chunk: bytes) -> PushArgs:
        return PushArgs.push("k", "k:meta", head, (chunk,), 1)

    assert runner.run(push(b"a")).length == 1
    client.script_flush()
    assert runner.run_once(push(b"b")).length == 2
    client.script_flush()
    replies = runner.run_pipelined([push(b"c"), push(b"d")], in_order=True)
    assert [reply.length for reply in replies] == [3, 4]
    client.script_flush()
    rpushed = PushArgs.rpushed("k", "k:meta", head, 2, 2)
    assert runner.run_after([("RPUSH", "k", b"e", b"f")], rpushed).length == 6
    client.script_flush()  # refused at EXEC: the count runs on its own after the RPUSH
    runner._loaded.add("push")  # as if loaded before the flush (fakeredis checks at EXEC)
    assert runner.run_after([("RPUSH", "k", b"g")], PushArgs.rpushed("k", "k:meta", head, 1, 1))
    assert client.lrange("k", 0, -1) == [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    assert client.hget("k:meta", "chunk_count") == b"7"

    def flushing_load(script: str | bytes) -> object:
        sha = fakeredis.FakeRedis.script_load(client, script)
        client.script_flush()
        return sha

    client.script_flush()
    client.script_load = flushing_load
    with pytest.raises(RedisUnavailable, match="NOSCRIPT"):
        runner.run(push(b"e"))
    assert client.llen("k") == 7


_WHOLE = re.compile(r"^-- A counter as stored:.*?\nend\n", re.DOTALL | re.MULTILINE)


def _whole_helpers() -> dict[str, str]:
    return {name: m.group(0) for name in SCRIPTS if (m := _WHOLE.search(_source(name)))}


def _source(name: str) -> str:
    return (LUA / f"{name}.lua").read_text(encoding="utf-8")


def test_every_script_reading_a_counter_reads_it_with_the_same_whole() -> None:
    """Scripts cannot share code (Redis and the PHP package load each file alone), so
    the counter rule is one helper copied word for word: a script that reads a counter
    with tonumber of a stored field, or a copy that drifted, fails here."""
    helpers = _whole_helpers()
    assert len(set(helpers.values())) == 1, sorted(helpers)
    for name in SCRIPTS:
        stored_read = re.search(r"tonumber\(redis\.call\('H(M?GET)", _source(name))
        assert stored_read is None, f"{name}.lua reads a stored counter with tonumber"


@given(value=st.one_of(st.from_regex(r"-?[0-9]{0,17}(\.[0-9])?", fullmatch=True), st.text()))
@settings(max_examples=300, deadline=None)
def test_lua_and_python_read_a_counter_alike(value: str) -> None:
    """snapshot.lua's `whole` and meta.as_count agree on any stored text: what compaction
    decides in Python is what the scripts did."""
    helper = next(iter(_whole_helpers().values()))
    client = fakeredis.FakeRedis()
    lua = helper + "local n = whole(ARGV[1]); if n == nil then return -1 end; "
    lua += "return string.format('%.0f', n)"
    got = client.eval(lua, 0, value.encode("utf-8"))
    want = fields.as_count(value)
    assert (None if got == -1 else int(got)) == want
