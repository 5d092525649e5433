"""The short chaos runs of `make test` (the full ones: `make chaos`, `make chaos-cluster`)."""

from __future__ import annotations

import pytest

from tests.chaos import run_chaos
from tests.chaos_cluster import run_cluster_chaos
from tests.conftest import SUMMARY_LINES, require_cluster_binaries, require_server


@pytest.mark.slow
@pytest.mark.redis_server
@pytest.mark.postgres
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


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.postgres
def test_short_cluster_chaos_run_reports_every_loss() -> None:
    """Six cluster nodes, three workers, two killed with kill -9 and a primary killed so
    that its replica takes over: nothing duplicated or out of order, no loss unreported,
    no buffer left, the workers stop with exit 0 on SIGTERM."""
    require_server("postgres")
    require_cluster_binaries()
    report = run_cluster_chaos(generations=20, chunks=15, kills=2, failovers=1, duration=8)
    SUMMARY_LINES.extend(f"cluster chaos: {line}" for line in report.lines())
    assert (report.duplicated, report.out_of_order, report.lost_silent) == (0, 0, 0), report.details
    assert report.buffers_left == 0, report.details
    assert report.worker_exit_codes == [0, 0, 0]
    assert report.worker_kills == 2 and report.failovers == 1
    assert report.exact + sum(1 for d in report.details if "reported" in d) == report.generations
