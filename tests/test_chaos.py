"""The short chaos run of `make test` (the full one is `make chaos`)."""

from __future__ import annotations

import pytest

from tests.chaos import run_chaos
from tests.conftest import SUMMARY_LINES, require_server


@pytest.mark.slow
def test_short_chaos_run_loses_and_duplicates_nothing() -> None:
    """Producer, two killed-and-restarted compactors, a Redis restart and a terminated
    PostgreSQL backend: every generation ends exactly equal to its chunks."""
    require_server("redis")
    require_server("postgres")
    report = run_chaos(chunks=600, generations=5, kills=8, duration=8)
    SUMMARY_LINES.extend(report.lines())
    assert report.unexpected == []
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 0)
    assert report.exact == report.generations
    assert report.kills >= 8 and report.redis_restarts == 1
    assert report.pg_backends_terminated == 1
