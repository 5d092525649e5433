"""Small helpers shared by the tests."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from genbuffer.compaction import CompactionRequest, CompactionResult, assemble_and_persist
from genbuffer.db.rows import LEASES
from tests.conftest import Stack


def compact(stack: Stack, org: int, gen: int, **options: Any) -> CompactionResult:
    """Run assemble_and_persist on the stack; ``config`` overrides go in ``config=``."""
    config = stack.config(**options.pop("config", {}))
    return assemble_and_persist(
        CompactionRequest(org, gen, **options),
        buffer=stack.buffer,
        repository=stack.repository,
        config=config,
    )


def stored_bytes(stack: Stack, gen: int) -> bytes | None:
    """The base64-decoded `compacted` column of a row, checked to be canonical base64."""
    row = stack.repository.get_generation(gen)
    assert row is not None
    if row.compacted is None:
        return None
    data = base64.b64decode(row.compacted, validate=True)  # no newlines, nothing stray
    assert base64.b64encode(data).decode("ascii") == row.compacted
    return data


def audit_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of the audit log (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def sequenced(stack: Stack) -> Stack:
    """A stack whose pushes may carry sequence numbers: on a cluster that takes the
    hash-tagged template (list and meta in one slot); call before using the buffer."""
    if stack.name == "cluster":
        stack.env["GENERATION_KEY_TAGS"] = "true"
    return stack


def expire_lease(stack: Stack, job: str) -> None:
    """The job's lease as a dead holder leaves it JOB_LEASE_TTL after its last renewal:
    never released, its expiry past. The next run takes it over at once instead of a
    test waiting out the TTL (the dead run no longer renews it)."""
    with stack.repository.engine.begin() as connection:
        done = connection.execute(
            update(LEASES)
            .where(LEASES.c.job == job, LEASES.c.released_at.is_(None))
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert done.rowcount == 1, f"no lease of {job} held to expire"


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches the engine runs in one transaction from now on (those of
    one generation run alone and are not counted), filled in as they run."""
    from genbuffer.engine import run  # noqa: PLC0415

    batches: list[int] = []
    real = run.assemble_and_persist_many

    def counted(requests: Any, **kwargs: Any) -> Any:
        batches.append(len(requests))
        return real(requests, **kwargs)

    monkeypatch.setattr(run, "assemble_and_persist_many", counted)
    return batches
