"""genbuf status: buffers in every state, at risk, without TTL, lost; thresholds; --list."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from genbuffer.db.rows import GEN
from genbuffer.durations import human_duration
from genbuffer.observation.status import StatusOptions, buffer_state, collect_status
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.meta import BufferMeta
from genbuffer.redis.survey import BufferFacts
from tests.conftest import Stack
from tests.helpers import compact
from tests.support.runner import GENBUF, clean_environ
from tests.support.servers import PrivateRedis
from tests.support.wait import wait_until

ORG = 71

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


@dataclass
class Fixture:
    """The generation ids of a fixture with a buffer in every state."""

    streaming: int
    finished: int
    idle: int
    quarantined: int
    orphaned: int
    plain: int  # RPUSH alone, no TTL: streaming, and a key without TTL
    at_risk: int  # finished, with a TTL shorter than --compaction-within
    lost: int  # a row older than the TTL, never compacted, its buffer gone
    compacted: int


def build_fixture(stack: Stack) -> Fixture:
    """One buffer per state, one key without TTL, one at risk, one lost generation."""
    repo, buffer = stack.repository, stack.buffer
    ids = {name: repo.create_generation(ORG) for name in Fixture.__dataclass_fields__}
    ids["orphaned"] = 987_654  # no row
    buffer.push_chunk(ORG, ids["streaming"], b"[1,")
    buffer.push_many(ORG, ids["finished"], [b"[", b"2]"])
    buffer.finish(ORG, ids["finished"])
    idle_key = buffer.push_chunk(ORG, ids["idle"], b"[3").key
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    buffer.client.hset(idle_key + ":meta", mapping={"last_chunk_at": old, "first_chunk_at": old})
    bad_key = buffer.push_chunk(ORG, ids["quarantined"], b"{bad").key
    buffer.protocol.record_failure(bad_key, "boom", 1)
    buffer.push_chunk(ORG, ids["orphaned"], b"{}")
    buffer.client.rpush(buffer.key_for(ORG, ids["plain"], None), b"x", b"y")
    risky_key = buffer.push_chunk(ORG, ids["at_risk"], b"[4]").key
    buffer.finish(ORG, ids["at_risk"])
    buffer.client.expire(risky_key, 60)
    buffer.push_chunk(ORG, ids["compacted"], b'{"ok": true}')
    buffer.finish(ORG, ids["compacted"])
    assert compact(stack, ORG, ids["compacted"], delete=True).ok
    # a blob waiting for migrate-compacted-from-metadata is not lost
    legacy = repo.create_generation(ORG, metadata={"compacted": "eA=="})
    with repo.engine.begin() as connection:  # created before the chunk TTL: lost
        connection.execute(
            update(GEN)
            .where(GEN.c.id.in_([ids["lost"], legacy]))
            .values(created_at=datetime.now(UTC) - timedelta(days=2))
        )
    return Fixture(**ids)


def test_status_counts_every_state(stack: Stack) -> None:
    """Each buffer lands in its state; no_ttl, at_risk, lost and the ledger are counted."""
    fixture = build_fixture(stack)
    report = collect_status(stack.buffer, stack.repository, StatusOptions())
    assert report.generations == {
        "streaming": 2,  # streaming, plain
        "finished": 2,  # finished, at_risk
        "idle": 1,
        "quarantined": 1,
        "orphaned": 1,
    }, report
    assert report.buffers == 7 and report.chunks == 9
    assert (report.no_ttl, report.at_risk, report.lost) == (1, 1, 1)
    assert report.lost_generations == [
        {"organization_id": ORG, "scenario_id": None, "generation_id": fixture.lost}
    ]
    assert report.compactions["last_hour"]["persisted"] == 1
    assert set(report.compaction_lag_seconds) == {"p50", "p95"}
    oldest = report.oldest_pending_age_seconds
    assert oldest is not None and 7100 < oldest < 7300  # the idle one, two hours quiet
    assert report.ok and report.alerts == []


def test_status_cli_json_thresholds_and_list(stack: Stack) -> None:
    """--json has the documented fields; a crossed threshold exits 1 and says which."""
    fixture = build_fixture(stack)
    calm = stack.cli("status", "--json", "--max-pending", "10", "--max-age", "3h")
    assert calm.exit_code == 0, calm.output
    document = json.loads(calm.stdout)
    for name in ("ok", "generations", "no_ttl", "at_risk", "oldest_pending_age_seconds", "lost"):
        assert name in document
    assert document["entries"] is None  # no --list
    alarmed = stack.cli("status", "--json", "--max-at-risk", "0", "--max-age", "1h")
    assert alarmed.exit_code == 1, alarmed.output
    alerts = json.loads(alarmed.stdout)["alerts"]
    assert len(alerts) == 2 and not json.loads(alarmed.stdout)["ok"]
    listed = stack.cli("status", "--json", "--list", "--state", "finished")
    entries = json.loads(listed.stdout)["entries"]
    assert sorted(e["generation_id"] for e in entries) == sorted(
        [fixture.finished, fixture.at_risk]
    )
    assert [e["at_risk"] for e in entries if e["generation_id"] == fixture.at_risk] == [True]
    old = json.loads(stack.cli("status", "--json", "--list", "--older-than", "1h").stdout)
    assert [e["generation_id"] for e in old["entries"]] == [fixture.idle]
    human = stack.cli("status", "--list", "--state", "quarantined")
    assert human.exit_code == 0 and "quarantined 1" in human.stdout, human.output
    assert "boom" in human.stdout  # the last error, in the list


def test_status_org_filter_and_bad_state(embedded: Stack) -> None:
    """--org narrows the survey; an unknown --state is a usage error (exit 2)."""
    build_fixture(embedded)
    embedded.buffer.push_chunk(ORG + 1, 5, b"x")
    other = json.loads(embedded.cli("status", "--json", "--org", str(ORG + 1)).stdout)
    assert other["buffers"] == 1 and other["generations"]["orphaned"] == 1
    bad = embedded.cli("status", "--state", "sleeping")
    assert bad.exit_code == 2 and "unknown --state sleeping" in bad.output


def test_status_counts_lists_over_max_len(stack: Stack) -> None:
    """GENERATION_CHUNK_MAX_LEN crossed is counted, not only logged."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"a"] * 5)
    options = StatusOptions(max_len=3)
    assert collect_status(stack.buffer, stack.repository, options).over_max_len == 1
    assert collect_status(stack.buffer, stack.repository, StatusOptions()).over_max_len == 0


def test_watch_prints_one_plain_frame_off_a_terminal(embedded: Stack) -> None:
    """--watch without a terminal (cron, a pipe) prints one frame and exits."""
    build_fixture(embedded)
    result = embedded.cli("status", "--watch")
    assert result.exit_code == 0 and result.stdout.count("buffers under prefix") == 1
    refused = embedded.cli("status", "--watch", "--json")
    assert refused.exit_code == 2


def _facts(meta: dict[str, str], length: int | None, idle: int | None) -> BufferFacts:
    return BufferFacts(
        key="k",
        organization_id=1,
        scenario_id=None,
        generation_id=1,
        length=length,
        meta=BufferMeta(meta),
        has_meta=bool(meta),
        list_ttl=100.0,
        meta_ttl=None,
        idle_seconds=idle,
        memory_bytes=None,
    )


MARKS = st.fixed_dictionaries(
    {},
    optional={
        "quarantined_at": st.just("t"),
        "orphaned_at": st.just("t"),
        "finished_at": st.just("t"),
    },
)


@given(
    meta=MARKS,
    has_row=st.sampled_from([True, False, None]),
    idle=st.none() | st.integers(0, 10_000),
)
def test_buffer_state_precedence(
    meta: dict[str, str], has_row: bool | None, idle: int | None
) -> None:
    """Set-aside marks win, then a missing row, then finished, then idle by time; an
    orphan mark whose row exists by now no longer counts (the next sweep compacts it)."""
    state = buffer_state(
        _facts(meta, 1, idle),
        has_row=has_row,
        idle=None if idle is None else float(idle),
        idle_after=timedelta(seconds=600),
    )
    if "quarantined_at" in meta:
        assert state == "quarantined"
    elif ("orphaned_at" in meta and has_row is not True) or has_row is False:
        assert state == "orphaned"
    elif "finished_at" in meta:
        assert state == "finished"
    elif idle is not None and idle >= 600:
        assert state == "idle"
    else:
        assert state == "streaming"


@pytest.mark.parametrize("seconds,text", [(None, "-"), (5, "5s"), (125, "2m"), (3700, "1h01m")])
def test_human_duration(seconds: float | None, text: str) -> None:
    """Durations as status prints them."""
    assert human_duration(seconds) == text


@pytest.mark.parametrize("page", [1, 2, 1000])
def test_survey_reports_each_buffer_once_whatever_the_page(stack: Stack, page: int) -> None:
    """A list and its meta hash in one SCAN page or in two, and a meta hash whose list
    is gone: each buffer once, the lone meta hash with no list."""
    buffer = stack.buffer
    both = buffer.push_chunk(ORG, 1, b"a").key
    lone = buffer.push_chunk(ORG, 2, b"b").key
    buffer.client.delete(lone)  # the list expired, its meta hash lives on
    buffer.client.rpush(buffer.key_for(ORG, 3, 9), b"c")  # a list alone, with a scenario
    seen = sorted((f.generation_id, f.length, f.has_meta) for f in buffer.survey.buffers(page))
    assert seen == [(1, 1, True), (2, None, True), (3, 1, False)]
    found = sorted(f.generation_id for f in buffer.scan.discover(page))
    assert found == [1, 2, 3]
    assert both.endswith(":chunks")


def test_buffers_under_another_prefix_fail_status_naming_it(stack: Stack) -> None:
    """REDIS_PREFIX=myapp_ while the app's buffers wait under laravel_database_: status
    does not report a green zero (the cron alert of docs/operations.md), it exits 1 naming the
    prefix to set, thresholds or not; under the right prefix it is green again."""
    app_prefix = stack.buffer.prefix + "laravel_database_"
    app = GenerationBuffer(stack.buffer.client, prefix=app_prefix)
    gen = stack.repository.create_generation(ORG)
    app.push_many(ORG, gen, [b"[1]"])
    for args in (["status", "--max-pending", "0", "--json"], ["status", "--json"]):
        done = stack.cli(*args)
        assert done.exit_code == 1, done.output
        report = json.loads(done.stdout)
        assert report["buffers"] == 0 and not report["ok"]
        # list and meta hash (a shared server may hold other tests' prefixes too)
        assert report["other_prefixes"][app_prefix] == 2
        configured = repr(stack.buffer.prefix)
        assert any(configured in a and app_prefix in a for a in report["alerts"])
    shown = stack.cli("status")
    assert shown.exit_code == 1 and "REDIS_PREFIX=" in shown.stdout and app_prefix in shown.stdout
    right = stack.cli("status", "--json", env={"REDIS_PREFIX": app_prefix})
    assert right.exit_code == 0 and json.loads(right.stdout)["other_prefixes"] == {}


def test_watch_on_a_terminal_outlives_a_redis_restart(servers: Stack, tmp_path: Path) -> None:
    """`status --watch` on a terminal, Redis killed under it (invariant 14): it exited
    with the error at the first failed survey (month-long run). The error is shown in
    place of the view, and the view comes back once Redis answers; Ctrl-C ends it."""
    private = PrivateRedis(tmp_path / "redis")
    private.directory.mkdir()
    private.start()
    env = clean_environ({**servers.env, "REDIS_URL": private.url, "COLUMNS": "200"})
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [GENBUF, "status", "--watch", "--interval", "0.5"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    shown = bytearray()

    def showing(text: bytes) -> bool:  # read what the terminal got so far, without blocking
        while select.select([leader], [], [], 0)[0]:
            try:
                shown.extend(os.read(leader, 1 << 16))
            except OSError:  # the process ended: nothing more to read
                break
        return text in shown

    try:
        wait_until(lambda: showing(b"buffers under prefix"), 30, "the first frame")
        private.kill()
        wait_until(lambda: showing(b"unreachable") or process.poll() is not None, 30, "the outage")
        assert process.poll() is None, bytes(shown).decode(errors="replace")
        del shown[:]
        private.start()
        wait_until(lambda: showing(b"buffers under prefix"), 30, "the view again")
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
        private.kill()
