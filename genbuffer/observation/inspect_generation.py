"""inspect-generation: the buffer keys of a generation, and optionally their removal."""

from __future__ import annotations

from collections.abc import Callable

from genbuffer import keys
from genbuffer.compaction.placement import RowRecord, place
from genbuffer.compaction.read import snapshot_for
from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.errors import OperationFailed
from genbuffer.prefixes import check_prefix
from genbuffer.redis import GenerationBuffer, KeyInfo

__all__ = ["InspectionResult", "inspect_generation", "unpersisted_chunks"]


class InspectionResult(Document):
    """What `inspect-generation --json` prints."""

    ok: bool = True
    organization_id: int
    generation_id: int
    scenario_id: int | None
    keys: list[KeyInfo]
    deleted: int
    unpersisted_chunks: int | None = None  # counted when deleting: chunks no row holds


def unpersisted_chunks(
    buffer: GenerationBuffer,
    repository: Repository,
    organization_id: int,
    generation_id: int,
    names: list[str],
) -> int:
    """How many chunks in these keys no row holds (read-only: nothing is written).

    Judged as compaction judges it (``placement.place``); a buffer that diverged from
    its row counts whole, since no row can be said to hold it.
    """
    row = repository.get_generation(generation_id)
    record = None
    if row is not None and row.organization_id == organization_id:
        record = RowRecord.from_metadata(row.metadata)
    total = 0
    for name in names:
        parts = keys.parse_chunks_key(name, buffer.prefix)
        if parts is None or parts.is_meta:
            continue
        snapshot = snapshot_for(buffer, name, record, lease=False, page=0)
        placement = place(record, snapshot, closed=record is not None and record.closed)
        done = 0 if placement.verdict is not None else placement.done
        total += max(0, snapshot.end - max(done, snapshot.trimmed))
    return total


def inspect_generation(
    buffer: GenerationBuffer,
    organization_id: int,
    generation_id: int,
    scenario_id: int | None = None,
    delete: bool = False,
    *,
    repository: Repository | None = None,
    confirm: Callable[[int], bool] | None = None,
) -> InspectionResult:
    """Describe a generation's keys; with ``delete``, remove exactly those keys.

    Deleting chunks that no row holds needs ``confirm(count)`` to say yes (the CLI's
    ``--yes`` or its prompt); ``repository`` tells which chunks a row holds.
    """
    names = buffer.keyspace.generation_keys(organization_id, generation_id, scenario_id)
    if not names:
        check_prefix(buffer)  # nothing here, but buffers under another prefix: say so
    reports = buffer.keyspace.describe(names)
    deleted, unpersisted = 0, None
    if delete and names:
        if repository is None:
            raise OperationFailed("deleting buffer keys needs the database, to spare chunks")
        unpersisted = unpersisted_chunks(buffer, repository, organization_id, generation_id, names)
        if unpersisted == 0 or (confirm is not None and confirm(unpersisted)):
            deleted = buffer.keyspace.delete(names)
    return InspectionResult(
        ok=not delete or deleted > 0 or not names,
        organization_id=organization_id,
        generation_id=generation_id,
        scenario_id=scenario_id if scenario_id is not None else _scenario_of(buffer, names),
        keys=reports,
        deleted=deleted,
        unpersisted_chunks=unpersisted,
    )


def _scenario_of(buffer: GenerationBuffer, names: list[str]) -> int | None:
    """The scenario the keys found name, when they all name one (a search without
    --scenario-id found the generation's keys under it)."""
    prefix = buffer.keyspace.target.prefix
    scenarios = {
        parts.scenario_id
        for name in names
        if (parts := keys.parse_chunks_key(keys.chunks_key_of(name), prefix)) is not None
    }
    return scenarios.pop() if len(scenarios) == 1 else None
