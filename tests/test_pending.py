"""compact-pending: finished and idle buffers are compacted; others are left or reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.conftest import Stack
from tests.helpers import compact, stored_bytes


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
    assert result.exit_code == 1, result.output  # the orphan failed
    out = json.loads(result.stdout)
    assert (out["buffers"], out["eligible"], out["compacted"], out["failed"]) == (5, 3, 2, 1)
    assert (out["skipped_quarantined"], out["skipped_active"]) == (1, 1)
    assert out["failures"][0]["generation_id"] == orphan_gen
    assert stored_bytes(stack, finished) == b'{"a":1}'
    assert stored_bytes(stack, idle) == b"[2]"
    assert stored_bytes(stack, streaming) is None
    assert stack.buffer.generation_keys(60, finished) == []
    assert stack.buffer.generation_keys(60, streaming) != []


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
    assert stack.buffer.generation_keys(61, gen) != []
