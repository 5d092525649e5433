"""compact-pending: finished and idle buffers are compacted; others are left or reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from genbuffer import keys
from genbuffer.compaction import CompactionRequest
from genbuffer.engine import burst, run, selection
from genbuffer.engine.burst import compact_pending
from genbuffer.errors import DatabaseUnavailable, GenbufferError
from tests.conftest import Stack
from tests.helpers import compact, count_batches, stored_bytes

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def test_compact_pending_takes_finished_and_idle_buffers(stack: Stack) -> None:
    """Finished → compacted and deleted; streaming → left; idle with --idle → compacted;
    quarantined → skipped; a failing one → reported with exit 1, the rest still done."""
    finished = stack.repository.create_generation(60, scenario_id=5)
    streaming = stack.repository.create_generation(60)
    idle = stack.repository.create_generation(60)
    poisoned = stack.repository.create_generation(60)
    orphan_gen = 999_999  # a buffer whose row does not exist
    stack.buffer.push_many(60, finished, [b'{"a":', b"1}"], scenario_id=5)
    stack.buffer.finish(60, finished, scenario_id=5)
    stack.buffer.push_chunk(60, streaming, b"[1")
    key = stack.buffer.push_chunk(60, idle, b"[2]").key
    stack.buffer.client.hset(key + ":meta", "last_chunk_at", "2020-01-01T00:00:00Z")
    stack.buffer.push_chunk(60, poisoned, b"{bad")
    for _ in range(2):
        compact(stack, 60, poisoned, strict=True, config={"max_attempts": 2})
    stack.buffer.push_chunk(60, orphan_gen, b"{}")
    stack.buffer.finish(60, orphan_gen)

    result = stack.cli("compact-pending", "--idle", "1h", "--json")
    assert result.exit_code == 1, result.output  # the orphan is reported, once
    out = json.loads(result.stdout)
    assert (out["buffers"], out["eligible"], out["compacted"], out["failed"]) == (5, 3, 2, 0)
    assert (out["skipped_quarantined"], out["skipped_active"]) == (1, 1)
    assert [o["generation_id"] for o in out["orphaned"]] == [orphan_gen] and not out["ok"]
    again = stack.cli("compact-pending", "--idle", "1h", "--json")
    assert again.exit_code == 0, again.output  # set aside: not reported every run
    repeat = json.loads(again.stdout)
    assert (repeat["skipped_orphaned"], repeat["orphaned"], repeat["ok"]) == (1, [], True)
    orphan_key = stack.buffer.key_for(60, orphan_gen, None)
    ttls = (
        stack.buffer.keyspace.ttl_of(orphan_key),
        stack.buffer.keyspace.ttl_of(orphan_key + ":meta"),
    )
    assert all(ttl > 0 for ttl in ttls), ttls  # set aside, and still expiring
    assert stored_bytes(stack, finished) == b'{"a":1}'
    assert stored_bytes(stack, idle) == b"[2]"
    assert stored_bytes(stack, streaming) is None
    assert stack.buffer.keyspace.generation_keys(60, finished) == []
    assert stack.buffer.keyspace.generation_keys(60, streaming) != []


def test_compact_pending_names_what_it_compacted_and_what_had_issues(stack: Stack) -> None:
    """--json lists which generations were compacted (organization and generation) and
    which had validation issues (with their codes and validation id), beside the counts,
    which keep their meaning; a dry run lists what it would compact; the human output
    names the generations with issues."""
    clean = stack.repository.create_generation(61)
    soft = stack.repository.create_generation(62)
    lost = stack.repository.create_generation(62)
    for org, gen, chunks in (
        (61, clean, [b"[1]"]),
        (62, soft, [b"{bad"]),
        (62, lost, [b"[1", b"]"]),
    ):
        stack.buffer.push_many(org, gen, chunks)
        stack.buffer.finish(org, gen)
    stack.buffer.client.lpop(stack.buffer.key_for(62, lost, None))  # a chunk gone: a failure

    planned = json.loads(stack.cli("compact-pending", "--dry-run", "--json").stdout)
    assert planned["would_compact"] == len(planned["compacted_generations"]) == 2
    done = stack.cli("compact-pending", "--json")
    assert done.exit_code == 1, done.output  # the lost chunk fails its generation
    out = json.loads(done.stdout)
    assert (out["compacted"], out["failed"]) == (2, 1)  # the counts as they were
    assert out["compacted_generations"] == [
        {"organization_id": 61, "generation_id": clean},
        {"organization_id": 62, "generation_id": soft},
    ]
    issues = {entry["generation_id"]: entry for entry in out["issues"]}
    assert set(issues) == {soft, lost}
    assert issues[soft]["organization_id"] == 62 and issues[soft]["codes"] == ["invalid_json"]
    assert issues[soft]["validation_id"] is not None
    assert "chunk_count_mismatch" in issues[lost]["codes"]
    assert [f["generation_id"] for f in out["failures"]] == [lost]
    again = stack.repository.create_generation(62)
    stack.buffer.push_many(62, again, [b"{bad"])
    stack.buffer.finish(62, again)
    human = stack.cli("compact-pending")
    assert f"issues: generation {again} (organization 62): invalid_json" in human.stdout


def test_a_buffer_already_in_its_row_is_removed_not_counted_compacted(stack: Stack) -> None:
    """A run killed between its commit and the buffer's removal leaves a buffer whose
    every chunk the row holds: the next run removes it and says so (already_persisted),
    and neither counts nor names it compacted, for nothing was written."""
    held = stack.repository.create_generation(61)
    fresh = stack.repository.create_generation(61)
    for gen in (held, fresh):
        stack.buffer.push_many(61, gen, [b'{"a":', b"1}"])
        stack.buffer.finish(61, gen)
    compact(stack, 61, held)  # committed, the buffer kept (as a kill before its removal)
    done = stack.cli("compact-pending", "--json")
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert (out["compacted"], out["already_persisted"]) == (1, 1), out
    assert [g["generation_id"] for g in out["compacted_generations"]] == [fresh]
    assert stack.buffer.keyspace.generation_keys(61, held) == []
    assert stored_bytes(stack, held) == stored_bytes(stack, fresh) == b'{"a":1}'


def test_compact_pending_without_idle_leaves_unfinished_buffers(stack: Stack) -> None:
    """Without --idle only finished streams are compacted; --keep keeps their buffers."""
    gen = stack.repository.create_generation(61)
    stack.buffer.push_chunk(61, gen, b"[1]")
    stamp = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    stack.buffer.client.hset(stack.buffer.key_for(61, gen, None) + ":meta", "last_chunk_at", stamp)
    first = json.loads(stack.cli("compact-pending", "--json").stdout)
    assert (first["eligible"], first["compacted"]) == (0, 0)
    stack.buffer.finish(61, gen)
    kept = stack.cli("compact-pending", "--keep", "--json")
    assert kept.exit_code == 0 and json.loads(kept.stdout)["compacted"] == 1
    assert stored_bytes(stack, gen) == b"[1]"
    assert stack.buffer.keyspace.generation_keys(61, gen) != []


def test_compact_pending_with_workers_compacts_each_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several generations in flight: every one byte-exact and acknowledged, failures
    reported in id order, whatever order the workers finish in."""
    gens = [stack.repository.create_generation(61) for _ in range(24)]
    for gen in gens:
        stack.buffer.push_many(61, gen, [f'{{"gen": {gen}, '.encode(), b'"ok": true}'])
        stack.buffer.finish(61, gen)
    broken = gens[3:6]
    real = run.assemble_and_persist

    def flaky(request: CompactionRequest, **kwargs: Any) -> Any:
        if request.generation_id in broken:
            raise GenbufferError(f"boom {request.generation_id}")
        return real(request, **kwargs)

    monkeypatch.setattr(run, "assemble_and_persist", flaky)
    monkeypatch.setattr(burst, "BATCH", 1)  # (each alone: the batches' own test is below)
    result = compact_pending(stack.buffer, stack.repository, stack.runtime.compaction, workers=4)
    assert (result.compacted, result.failed) == (21, 3)
    assert [f["generation_id"] for f in result.failures] == sorted(broken)
    for gen in gens:
        if gen in broken:
            assert stored_bytes(stack, gen) is None and stack.buffer.keyspace.generation_keys(
                61, gen
            )
        else:
            assert stored_bytes(stack, gen) == f'{{"gen": {gen}, "ok": true}}'.encode()
            assert stack.buffer.keyspace.generation_keys(61, gen) == []


def test_compact_pending_compacts_in_batches_after_each_threads_first(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread's first buffer alone (compacting starts while the scan goes on), then up
    to BATCH in one transaction: 20 buffers on 2 threads are 2 alone and then batches
    of at most 8 (18 in all). Every one byte-exact, acknowledged, counted once."""
    gens = [stack.repository.create_generation(63) for _ in range(20)]
    for gen in gens:
        stack.buffer.push_many(63, gen, [b"[", f"{gen}".encode(), b"]"])
        stack.buffer.finish(63, gen)
    batches = count_batches(monkeypatch)
    result = compact_pending(stack.buffer, stack.repository, stack.runtime.compaction, workers=2)
    assert (result.compacted, result.failed) == (20, 0)
    pool = 1 if stack.repository.dialect == "sqlite" else 2  # (SQLite: one thread)
    assert sum(batches) == 20 - pool and max(batches) == 8, batches
    for gen in gens:
        assert stored_bytes(stack, gen) == f"[{gen}]".encode()
        assert stack.buffer.keyspace.generation_keys(63, gen) == []


def test_compact_pending_outage_stops_new_work_and_acknowledges_what_committed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage in one worker: nothing new starts, those in flight finish and are
    acknowledged, and the outage is raised (exit 3)."""
    gens = [stack.repository.create_generation(62) for _ in range(12)]
    for gen in gens:
        stack.buffer.push_many(62, gen, [b"[", f"{gen}".encode(), b"]"])
        stack.buffer.finish(62, gen)
    real = run.assemble_and_persist
    started: list[int] = []

    def failing(request: CompactionRequest, **kwargs: Any) -> Any:
        started.append(request.generation_id)
        if len(started) == 3:
            raise DatabaseUnavailable("the database went away")
        return real(request, **kwargs)

    monkeypatch.setattr(run, "assemble_and_persist", failing)
    monkeypatch.setattr(burst, "BATCH", 1)  # (a batch's outage: tests/test_run.py)
    with pytest.raises(DatabaseUnavailable):
        compact_pending(stack.buffer, stack.repository, stack.runtime.compaction, workers=2)
    assert len(started) < len(gens)  # no new work after the outage
    done = [gen for gen in gens if stored_bytes(stack, gen) is not None]
    assert len(done) == len(started) - 1
    for gen in done:  # committed, so acknowledged before the outage was raised
        assert stack.buffer.keyspace.generation_keys(62, gen) == []


def test_an_orphan_whose_row_comes_later_is_compacted(stack: Stack) -> None:
    """An app that commits its row after the stream's end: the first run finds no row and
    sets the buffer aside; once the row exists, the next run compacts it (it skipped it
    for good, and the chunks expired: invariant 12). Status stops calling it orphaned."""
    late = 987_401  # the row the app has not committed yet
    stack.buffer.push_many(60, late, [b'{"late":', b"true}"])
    stack.buffer.finish(60, late)
    first = stack.cli("compact-pending", "--json")
    assert [o["generation_id"] for o in json.loads(first.stdout)["orphaned"]] == [late]
    stack.repository.create_generation(60, generation_id=late)
    counted = json.loads(stack.cli("status", "--json").stdout)["generations"]
    assert (counted["orphaned"], counted["finished"]) == (0, 1), counted
    again = stack.cli("compact-pending", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["compacted"] == 1, again.stdout
    assert stored_bytes(stack, late) == b'{"late":true}'
    assert stack.buffer.keyspace.generation_keys(60, late) == []


def test_an_orphan_of_another_organizations_row_stays_aside(stack: Stack) -> None:
    """A row with that id but another organization is not the buffer's row: still
    orphaned, not compacted into someone else's row."""
    gen = stack.repository.create_generation(61)
    stack.buffer.push_many(60, gen, [b"[1]"])
    stack.buffer.finish(60, gen)
    stack.cli("compact-pending", "--json")
    again = json.loads(stack.cli("compact-pending", "--json").stdout)
    assert (again["compacted"], again["skipped_orphaned"]) == (0, 1), again
    assert stored_bytes(stack, gen) is None


def test_an_orphan_past_the_bigint_range_stops_no_run(stack: Stack) -> None:
    """A buffer key's generation id may have 19 digits, past the bigint column: set aside
    as orphaned, it was asked for its row with the page's other orphans, and SQLite
    refused the query (OverflowError): compact-pending died with a traceback before it
    compacted the page's other buffers, every run, and so did each sweep of a worker and
    status. No row can have that id: it stays aside, the others are compacted."""
    gen = stack.repository.create_generation(60)
    key = stack.buffer.push_many(60, gen, [b"[", b"1]"]).key
    stack.buffer.finish(60, gen)
    past = key.replace(f":generation:{gen}:", f":generation:{keys.MAX_ID + 1}:")
    stack.buffer.client.rpush(past, b"[2]")
    stack.buffer.protocol.mark_orphaned(past, "no generation for organization 60")
    done = stack.cli("compact-pending", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert (result["compacted"], result["skipped_orphaned"]) == (1, 1), result
    assert stored_bytes(stack, gen) == b"[1]"
    status = stack.cli("status", "--json")
    assert json.loads(status.stdout)["generations"]["orphaned"] == 1, status.output


def test_compact_pending_acknowledges_what_committed_when_the_scan_meets_an_outage(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away while the scan asks which orphans of its next page have
    their row by now: the outage is raised (exit 3), and what committed before it is
    acknowledged (raised from the scan, it left those buffers in Redis, a compaction
    done and not trimmed)."""
    monkeypatch.setattr(selection, "OBSERVE_PAGE", 3)
    gens = [stack.repository.create_generation(62) for _ in range(9)]
    for gen in gens:  # each set aside while its row was not there, and it is by now
        key = stack.buffer.push_many(62, gen, [b"[", f"{gen}".encode(), b"]"]).key
        stack.buffer.finish(62, gen)
        stack.buffer.protocol.mark_orphaned(key, "no generation for organization 62")
    real = stack.repository.observations.organizations_of
    asked: list[list[int]] = []

    def owners(generation_ids: list[int]) -> dict[int, int]:
        asked.append(generation_ids)
        if len(asked) == 2:  # the second page's
            raise DatabaseUnavailable("the database went away")
        return real(generation_ids)

    monkeypatch.setattr(stack.repository.observations, "organizations_of", owners)
    with pytest.raises(DatabaseUnavailable):
        compact_pending(stack.buffer, stack.repository, stack.runtime.compaction, workers=1)
    done = [gen for gen in gens if stored_bytes(stack, gen) is not None]
    assert done and set(done) <= set(asked[0]), (done, asked)
    for gen in done:  # committed, so acknowledged before the outage was raised
        assert stack.buffer.keyspace.generation_keys(62, gen) == [], gen
