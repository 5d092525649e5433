"""The Redis key scheme, pinned as literal strings."""

from __future__ import annotations

import pytest

from genbuffer import keys
from genbuffer.errors import UsageError


def test_chunks_key_with_scenario_is_pinned() -> None:
    """The scenario key is exactly the contract's string."""
    assert (
        keys.chunks_key(12, 59, 345)
        == "app:scenario_planning:org:12:scenario:345:generation:59:chunks"
    )


def test_chunks_key_without_scenario_is_pinned() -> None:
    """Without a scenario the key drops the scenario segment."""
    assert keys.chunks_key(12, 59) == "app:scenario_planning:org:12:generation:59:chunks"


def test_meta_key_is_chunks_key_plus_meta() -> None:
    """The meta hash is the chunks key with ':meta'."""
    assert (
        keys.meta_key(keys.chunks_key(12, 59))
        == "app:scenario_planning:org:12:generation:59:chunks:meta"
    )


@pytest.mark.parametrize("prefix", ["laravel_database_", "laravel-database-", "my*app["])
def test_prefix_is_applied_once_and_parsed_back(prefix: str) -> None:
    """A key built with a prefix parses back to its ids with the same prefix."""
    key = keys.chunks_key(7, 8, 9, prefix)
    assert key == f"{prefix}app:scenario_planning:org:7:scenario:9:generation:8:chunks"
    parts = keys.parse_chunks_key(key, prefix)
    assert parts == keys.KeyParts(7, 9, 8, is_meta=False)
    assert keys.parse_chunks_key(prefix + key, prefix) is None  # never prefixed twice


def test_scan_pattern_escapes_glob_characters_in_the_prefix() -> None:
    """Glob characters in a prefix are escaped so SCAN matches them literally."""
    assert (
        keys.scenario_scan_pattern(1, 2, "a*b?[c]")
        == r"a\*b\?\[c\]*app:scenario_planning:org:1:scenario:*:generation:2:chunks*"
    )


@pytest.mark.parametrize("bad", [0, -1, "12*", "1e3", "", "abc", True, 2**63, "٣"])
def test_validate_id_rejects_everything_but_positive_bigints(bad: object) -> None:
    """Ids must be positive integers that fit a bigint."""
    with pytest.raises(UsageError):
        keys.validate_id(bad)


def test_parse_rejects_foreign_keys() -> None:
    """Keys that are not buffer keys parse to None."""
    assert keys.parse_chunks_key("app:scenario_planning:org:1:generation:2:chunksX") is None
    assert keys.parse_chunks_key("app:scenario_planning:org:0:generation:2:chunks") is None
    assert keys.parse_chunks_key("other") is None


def test_discovery_patterns_and_prefixes_are_pinned() -> None:
    """The SCAN patterns of discovery, and how a key found elsewhere names its prefix."""
    assert (
        keys.all_buffers_scan_pattern("laravel_database_")
        == "laravel_database_*app:scenario_planning:org:*:generation:*:chunks*"
    )
    assert (
        keys.all_buffers_scan_pattern("a*b")
        == r"a\*b*app:scenario_planning:org:*:generation:*:chunks*"
    )
    assert keys.any_prefix_scan_pattern() == "*app:scenario_planning:org:*:generation:*:chunks*"
    found = "laravel-database-app:scenario_planning:org:12:scenario:3:generation:57:chunks:meta"
    assert keys.prefix_of(found) == "laravel-database-"
    assert keys.prefix_of("app:scenario_planning:org:12:generation:57:chunks") == ""
    assert keys.prefix_of("x:app:scenario_planning:org:12:generation:5x:chunks") is None
    assert keys.chunks_key_of(found) == found.removesuffix(":meta")


@pytest.mark.parametrize("good", ["12", "1", "9223372036854775807"])
def test_validate_id_takes_plain_ascii_digits(good: str) -> None:
    """Plain ASCII digits are an id; `+12`, `1_2` and spaces are not (see the bad list)."""
    assert keys.validate_id(good) == int(good)
    for bad in (
        f"+{good}",
        f" {good}",
        f"{good} ",
        f"{good[0]}_{good[1:]}" if len(good) > 1 else "_1",
    ):
        with pytest.raises(UsageError):
            keys.validate_id(bad)


def test_the_tagged_template_shares_a_slot_and_parses_back() -> None:
    """`{prefix}{app:…:chunks}` and its `:meta` hash on the same tag; both templates parse
    to the same ids (tagged or not), and genbuf's own hash of an untagged list is tagged
    with the whole list key (the slot of an untagged key is its whole name)."""
    plain = keys.chunks_key(7, 8, None, "laravel_database_")
    tagged = keys.chunks_key(7, 8, None, "laravel_database_", tagged=True)
    assert tagged == "laravel_database_{app:scenario_planning:org:7:generation:8:chunks}"
    assert keys.hash_tag(tagged) == keys.hash_tag(keys.meta_key(tagged)) == plain[17:]
    assert keys.hash_tag(plain) is None and keys.hash_tag("a{}b{c}") is None
    assert keys.hash_tag(keys.state_key(plain)) == plain
    assert keys.parse_chunks_key(tagged, "laravel_database_") == keys.KeyParts(
        7, None, 8, is_meta=False, tagged=True
    )
    assert keys.parse_chunks_key(keys.meta_key(tagged), "laravel_database_") == keys.KeyParts(
        7, None, 8, is_meta=True, tagged=True
    )
    assert keys.prefix_of(keys.meta_key(tagged)) == "laravel_database_"
    # neither genbuf's own hash nor a half tag is a buffer key
    assert keys.parse_chunks_key(keys.state_key(plain), "") is None
    assert keys.parse_chunks_key("{app:scenario_planning:org:7:generation:8:chunks", "") is None
    assert keys.prefix_of(keys.state_key(plain)) is None


def test_the_worker_keys_are_pinned() -> None:
    """The worker fleet's keys: its events stream, the stream of parked (malformed)
    events, the heartbeat hash and the sweeper's lock, each under the prefix."""
    prefix = "laravel_database_"
    assert keys.events_key(prefix) == "laravel_database_app:scenario_planning:compaction-events"
    assert (
        keys.parked_events_key(prefix)
        == "laravel_database_app:scenario_planning:compaction-events:parked"
    )
    assert keys.fleet_key(prefix) == "laravel_database_app:scenario_planning:compaction-workers"
    assert (
        keys.sweeper_lock_key(prefix) == "laravel_database_app:scenario_planning:compaction-sweeper"
    )
