"""Checks with a verdict (ok, warn, fail) and a hint; the durability checks that
doctor and test-redis-buffer both run: can this Redis lose chunks on its own?"""

from __future__ import annotations

from typing import Literal

from genbuffer.documents import Document
from genbuffer.redis import GenerationBuffer

__all__ = ["Check", "Status", "durability_checks"]

Status = Literal["ok", "warn", "fail"]


class Check(Document):
    """One line of doctor: its name, verdict, what was found, and what to do."""

    name: str
    status: Status
    message: str
    hint: str | None = None


def durability_checks(buffer: GenerationBuffer) -> list[Check]:
    """Eviction policy (allkeys-*: fail; volatile-*: warn) and persistence (none: warn)."""
    found = buffer.keyspace.durability()
    if found is None:
        return [
            Check(
                name="eviction",
                status="warn",
                message="CONFIG or INFO refused: the eviction policy and persistence are unknown",
                hint="check maxmemory-policy (noeviction) and persistence by hand",
            )
        ]
    policy = found["maxmemory-policy"]
    if policy.startswith("allkeys-"):
        eviction = Check(
            name="eviction",
            status="fail",
            message=f"maxmemory-policy {policy}: when memory is full Redis evicts buffers, "
            "and their chunks are lost",
            hint="CONFIG SET maxmemory-policy noeviction (and in redis.conf), or give the "
            "buffers a Redis of their own",
        )
    elif policy.startswith("volatile-"):
        eviction = Check(
            name="eviction",
            status="warn",
            message=f"maxmemory-policy {policy}: buffers have TTLs, so Redis may evict them "
            "when memory is full",
            hint="noeviction makes a full Redis refuse pushes instead of dropping chunks",
        )
    else:
        eviction = Check(name="eviction", status="ok", message=f"maxmemory-policy {policy}")
    aof = found["aof_enabled"] == "1"
    rdb = bool(found["save"].strip())
    if aof or rdb:
        persistence = Check(
            name="persistence",
            status="ok",
            message="AOF on" if aof else f"RDB snapshots (save {found['save']!r}), no AOF",
        )
    else:
        persistence = Check(
            name="persistence",
            status="warn",
            message="neither AOF nor RDB: a restart of Redis loses every chunk not yet compacted",
            hint="appendonly yes (CONFIG SET appendonly yes, and in redis.conf)",
        )
    return [eviction, persistence]
