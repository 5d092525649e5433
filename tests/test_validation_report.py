"""validation-report and the compaction ledger it counts from."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from genbuffer.db.rows import GEN, LEDGER
from genbuffer.errors import ForeignArtifact
from tests.conftest import Stack
from tests.helpers import compact

ORG = 75


def _generation(stack: Stack, content: bytes) -> int:
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_chunk(ORG, gen, content)
    return gen


def test_validation_report_after_soft_compactions(stack: Stack) -> None:
    """Soft compactions with and without errors, one strict abort: the report counts the
    codes, the days, and how many soft compactions strict mode would have aborted."""
    clean = _generation(stack, b'{"fine": true}')
    broken = _generation(stack, b'{"broken":')
    strict = _generation(stack, b"[1,")
    assert compact(stack, ORG, clean).issues == []
    assert compact(stack, ORG, broken).persisted
    assert not compact(stack, ORG, strict, strict=True).ok
    done = stack.cli("validation-report", "--since", "1d", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["strict_would_abort"] == 1
    assert report["compactions"]["soft_persisted"] == 2
    assert report["compactions"]["strict_abort"] == 1
    assert report["strict_would_abort_ratio"] == 0.5
    codes = {(c["code"], c["severity"]): c for c in report["codes"]}
    invalid = codes[("invalid_json", "error")]
    assert invalid["count"] == 2 and sorted(invalid["examples"]) == sorted([broken, strict])
    today = datetime.now(UTC).date().isoformat()
    assert report["per_day"][today]["rows"] == report["issue_rows"] == 2
    assert report["by_mode"] == {"soft": 1, "strict": 1}
    human = stack.cli("validation-report", "--since", "1d")
    assert "strict mode would have aborted 1 of 2 soft compactions (50.0%)" in human.stdout
    assert "invalid_json" in human.stdout


def test_ledger_records_every_outcome(stack: Stack) -> None:
    """persisted (with its lag and error count), strict_abort, and failed: an abort over
    GENERATION_MAX_BYTES and an error raised inside the compaction."""
    ok = _generation(stack, b'{"a": 1}')
    oversize = _generation(stack, b"x" * 100)
    foreign = _generation(stack, b"[]")
    with stack.repository.engine.begin() as connection:
        connection.execute(update(GEN).where(GEN.c.id == foreign).values(compacted="eA=="))
    compact(stack, ORG, ok)
    assert not compact(stack, ORG, oversize, config={"max_bytes": 10}).ok
    with pytest.raises(ForeignArtifact):
        compact(stack, ORG, foreign)
    with stack.repository.engine.connect() as connection:
        rows = {
            row.generation_id: row
            for row in connection.execute(select(LEDGER).where(LEDGER.c.organization_id == ORG))
        }
    assert rows[ok].result == "persisted" and rows[ok].errors == 0
    assert rows[ok].lag_seconds is not None and 0 <= rows[ok].lag_seconds < 60
    assert rows[oversize].result == "failed" and "GENERATION_MAX_BYTES" in rows[oversize].message
    assert rows[foreign].result == "failed" and "did not write" in rows[foreign].message
    counts = stack.repository.observations.compactions()
    assert counts == {"persisted": 1, "failed": 2}


@pytest.mark.backends("embedded")
def test_validation_report_shows_every_code_whole_at_80_columns(stack: Stack) -> None:
    """At 80 columns each code is on one line, never cut to 'chunk_count_mism…', and
    the examples fold rather than end in '…'."""
    gens = []
    for _ in range(4):
        gen = stack.repository.create_generation(ORG)
        pushed = stack.buffer.push_many(ORG, gen, [b"[1", b",2", b"]"])
        stack.buffer.client.lpop(pushed.key)  # a chunk lost: chunk_count_mismatch, invalid_json
        compact(stack, ORG, gen)
        gens.append(gen)
    shown = stack.cli("validation-report", "--since", "1d", env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    for code in ("chunk_count_mismatch", "invalid_json"):
        assert any(code in line for line in lines), shown.stdout
    assert "…" not in shown.stdout
    assert max(len(line) for line in lines if line[:1] in "┏┃┡│└") <= 80
