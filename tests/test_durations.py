"""Durations as typed: s, m, h, d, w, at most a century, and a bad one is a usage error (exit 2)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from genbuffer.durations import parse_age
from genbuffer.errors import UsageError
from tests.conftest import Stack


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_parse_age(text: str, expected: timedelta) -> None:
    """Ages take s, m, h, d, w."""
    assert parse_age(text) == expected


def test_a_bare_number_is_days_only_where_asked(embedded: Stack) -> None:
    """purge-chunks' --older-than 7 is days, as the Artisan command took it, and says so;
    elsewhere a number without a unit is refused with a hint (--visibility 300 waited
    300 days, metrics --refresh 15 surveyed every 15 days)."""
    assert parse_age("3", bare_days=True) == timedelta(days=3)
    with pytest.raises(UsageError, match="no unit") as raised:
        parse_age("300")
    assert raised.value.hint is not None and "300s" in raised.value.hint
    for command in (
        ("worker", "--visibility", "300"),
        ("status", "--max-age", "3600"),
        ("compact-pending", "--idle", "30"),
    ):
        refused = embedded.cli(*command)
        assert refused.exit_code == 2 and "no unit" in refused.stderr, (command, refused.output)
    purged = embedded.cli("purge-chunks", "--older-than", "7", "--dry-run")
    assert purged.exit_code == 0 and "older than 7d" in purged.stdout, purged.output


@pytest.mark.parametrize(
    "text", ["", "0d", "-1d", "7x", "d7", "1.5d", "99999999999d", "36501d", "9" * 5000]
)
def test_parse_age_rejects_bad_input(text: str) -> None:
    """Anything else is a usage error, an age past a century too (no overflow)."""
    with pytest.raises(UsageError):
        parse_age(text)


def test_parse_age_takes_up_to_a_century() -> None:
    """36500d, the longest age, is taken as it is."""
    assert parse_age("36500d") == timedelta(days=36500)


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--visibility", "99999999999d"],
        ["purge-objects", "--grace", "999999999d"],
        ["status", "--idle", "99999999999d"],
        ["compact-pending", "--idle", "99999999999d"],
        ["purge-chunks", "--older-than", "999999999d"],
        ["validation-report", "--since", "999999999w"],
    ],
)
def test_a_huge_duration_is_one_line_and_exit_2(embedded: Stack, args: list[str]) -> None:
    """`--visibility 99999999999d` and the like: `error:` and exit 2, not an overflow."""
    embedded.env["GENERATION_OFFLOAD_URL"] = f"file://{embedded.tmp_path / 'objects'}"
    done = embedded.cli(*args)
    assert done.exit_code == 2, done.output
    assert "too long: at most 36500d" in done.output and "Traceback" not in done.output
