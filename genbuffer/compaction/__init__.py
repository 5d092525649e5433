"""The compaction core: one generation's buffer into its row, without losing a chunk.

A one-way pipeline, each step a module that never calls back up (``run.py`` holds
the order)::

    request.py, config.py   what to compact and how; the settings it reads
    read.py                 1. read: which key; one snapshot, taken with the row locked
    validate.py             2. validate: placed against the row (placement.py); the
                               artifact read once (scan.py, jsoncheck.py), checked
                               (validator.py)
    plan.py                 3. plan: a value (what to write, trim, keep, or why to stop)
    apply.py                4. apply: the row written, committed; the ledger and audit
                               rows (records.py), the announcement, the trim, the count
    result.py               what `compact-generation --json` prints

The protocol, per generation::

    BEGIN; SELECT … FOR UPDATE the row        one compactor at a time (SQLite: BEGIN IMMEDIATE)
    snapshot the buffer (Lua)                 length + meta atomically; stream id; TTL lease
    read chunks [done, end) by absolute position, in pages
    validate the whole artifact (existing + new)
    plan: what to write, or why to stop
    strict with errors → ROLLBACK; issue row + JSONL in their own transaction; exit 1
    else UPDATE the row (append, never overwrite), issue row, chunk backups; COMMIT
    JSONL line; with --delete acknowledge: trim exactly the committed chunks (Lua),
    and delete the keys only if nothing arrived meanwhile

Several generations may share one transaction (``assemble_and_persist_many``: a
worker's batch): rows locked in id order, each one's steps as above, one COMMIT.

The row records which buffer stream it holds and up to which position
(``metadata.buffer``), so a crash anywhere, a retry or a second compactor
appends exactly the chunks not yet persisted. There is no claim to sweep after
a crash: the row lock dies with the connection, and the buffer is only trimmed
below what a committed row already holds. A COMMIT whose reply is lost is
checked on a fresh connection before anything is acknowledged.

Names load on first use: a command that only reads ``CompactionConfig`` (or the
validator) does not pay for the pipeline.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "CompactionConfig",
    "CompactionRequest",
    "CompactionResult",
    "Found",
    "Options",
    "assemble_and_persist",
]

_EXPORTS = {
    "CompactionConfig": "genbuffer.compaction.config",
    "CompactionRequest": "genbuffer.compaction.request",
    "CompactionResult": "genbuffer.compaction.result",
    "Found": "genbuffer.compaction.request",
    "Options": "genbuffer.compaction.request",
    "assemble_and_persist": "genbuffer.compaction.run",
}

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.request import CompactionRequest, Found, Options
    from genbuffer.compaction.result import CompactionResult
    from genbuffer.compaction.run import assemble_and_persist


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genbuffer.compaction' has no attribute {name!r}")
