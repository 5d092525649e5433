"""show-generation: a compacted artifact's bytes read back (its row or the object
store), verified by sha256."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from genbuffer.db.repository import Repository
from genbuffer.documents import Document
from genbuffer.errors import GenerationNotFound, NothingToCompact, RedisUnavailable
from genbuffer.objects.artifact import ArtifactMismatch, OffloadRecord
from genbuffer.objects.offload import Offload
from genbuffer.redis import GenerationBuffer

__all__ = ["ArtifactFacts", "ArtifactMismatch", "open_artifact", "read_artifact"]


class ArtifactFacts(Document):
    """What `show-generation --json` prints."""

    ok: bool = True
    organization_id: int
    generation_id: int
    scenario_id: int | None
    bytes: int
    chunk_count: int | None
    sha256: str
    sha256_recorded: str | None  # what compaction recorded (None: not recorded)
    verified: bool
    compacted_at: datetime | None
    compacted_by: str | None
    validations: list[dict[str, Any]] = Field(default_factory=list)
    history: int = 0  # artifacts a regenerated stream replaced, kept
    # compacted before its stream was marked finished (idle, at_risk; open: by id): a
    # later stream continues or replaces it by content (None: whole, or unknown)
    provisional: str | None = None
    # each later stream that met the artifact: appended or replaced, the rule, when
    late_chunks: list[dict[str, Any]] = Field(default_factory=list)
    buffer_in_redis: bool | None  # None: Redis could not be asked (the artifact is the row's)
    offloaded: str | None = None  # the object's URL, when `compacted` holds one
    compression: str | None = None  # of the offloaded object
    output: str | None = None


def read_artifact(
    repository: Repository,
    buffer: GenerationBuffer,
    organization_id: int,
    generation_id: int,
    offload: Offload | None = None,
) -> tuple[bytes, ArtifactFacts]:
    """The artifact's bytes exactly as pushed, with its facts; a sha256 that does not
    match what compaction recorded is an error (exit 1), and nothing is returned."""
    blocks, facts = open_artifact(repository, buffer, organization_id, generation_id, offload)
    return b"".join(blocks), facts


def _not_found_hint(elsewhere: bool, generation_id: int) -> str:
    """What to check when the row is not the organization's: the ids' order, or that
    the row was never created (the app creates it; genbuf only fills it)."""
    if elsewhere:
        return (
            f"row {generation_id} of scenario_generations belongs to another organization: "
            "check ORG, the first argument (ORG GEN)"
        )
    return (
        f"scenario_generations has no row {generation_id}: check GEN, the second argument "
        "(ORG GEN); the app creates the row, `genbuf status --list` lists buffers not "
        "compacted yet"
    )


def open_artifact(
    repository: Repository,
    buffer: GenerationBuffer,
    organization_id: int,
    generation_id: int,
    offload: Offload | None = None,
) -> tuple[Iterator[bytes], ArtifactFacts]:
    """The artifact's bytes as blocks, and its facts, whether `compacted` holds base64 or
    an object's URL. A base64 artifact is verified before its one block is given; an
    offloaded one is first admitted by the trust boundary (``offload``'s stores, else
    ObjectRefused before anything is read), then streams from the store (bounded memory)
    and raises ArtifactMismatch after its last block if the bytes do not hash to the
    recorded sha256."""
    row = repository.get_generation(generation_id)
    if row is None or row.organization_id != organization_id:
        raise GenerationNotFound(
            f"no generation {generation_id} for organization {organization_id}",
            hint=_not_found_hint(row is not None, generation_id),
        )
    metadata = row.metadata if isinstance(row.metadata, dict) else {}
    if row.compacted is None:
        legacy = "compacted" in metadata
        raise NothingToCompact(
            f"generation {generation_id} has no compacted artifact"
            + (" (a legacy blob is still in metadata.compacted)" if legacy else ""),
            hint="genbuf migrate-compacted-from-metadata"
            if legacy
            else f"compact it first: genbuf compact-generation {organization_id} {generation_id}",
        )
    recorded = metadata.get("sha256")
    recorded = recorded if isinstance(recorded, str) else None
    offloaded = OffloadRecord.of_row(row.compacted, metadata)
    blocks: Iterator[bytes]
    if offloaded is not None:
        # refused here, before the caller can write a byte: an object outside the
        # configured stores, or not by the name genbuf gives this row's artifact
        held = (offload or Offload()).held(offloaded, organization_id, generation_id)
        blocks = held.blocks()
        size, digest, recorded = offloaded.bytes, offloaded.sha256, offloaded.sha256
    else:
        data = _decoded(generation_id, row.compacted, recorded)
        size, digest, blocks = len(data), hashlib.sha256(data).hexdigest(), iter((data,))
    validations = [
        {
            "id": issue["id"],
            "mode": issue["mode"],
            "source": issue["source"],
            "created_at": _utc(issue["created_at"]),
            "codes": [e.get("code") for e in issue["errors"] if isinstance(e, dict)],
        }
        for issue in repository.observations.issues_of(generation_id)
    ]
    present = _buffer_in_redis(buffer, organization_id, generation_id, row.scenario_id)
    facts = ArtifactFacts(
        organization_id=organization_id,
        generation_id=generation_id,
        scenario_id=row.scenario_id,
        bytes=size,
        chunk_count=row.chunk_count,
        sha256=digest,
        sha256_recorded=recorded,
        verified=recorded is not None,
        compacted_at=_utc(row.compacted_at),
        compacted_by=row.compacted_by,
        validations=validations,
        history=len(metadata.get("history") or []),
        provisional=_provisional(metadata),
        late_chunks=[
            {"outcome": entry.get("reason"), "rule": entry.get("rule"), "at": entry.get("at")}
            for entry in metadata.get("history") or []
            if isinstance(entry, dict)
        ],
        buffer_in_redis=present,
        offloaded=offloaded.url if offloaded is not None else None,
        compression=offloaded.compression if offloaded is not None else None,
    )
    return blocks, facts


def _provisional(metadata: dict[str, Any]) -> str | None:
    """Why the row's artifact is provisional (metadata.buffer.provisional), if it is."""
    record = metadata.get("buffer")
    found = record.get("provisional") if isinstance(record, dict) else None
    return found if isinstance(found, str) else None


def _decoded(generation_id: int, compacted: str, recorded: str | None) -> bytes:
    """A base64 artifact's bytes, checked against the sha256 compaction recorded."""
    try:
        data = base64.b64decode(compacted, validate=True)
    except (binascii.Error, ValueError):
        raise ArtifactMismatch(
            f"generation {generation_id}: `compacted` is neither valid base64 nor the URL "
            "of an offloaded artifact"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if recorded is not None and recorded != digest:
        raise ArtifactMismatch(
            f"generation {generation_id}: the artifact hashes to {digest}, "
            f"but compaction recorded {recorded}",
            hint="the column was changed outside genbuf; the chunk backups "
            "(generation_chunks) may still hold the original",
        )
    return data


def _utc(stamp: datetime | None) -> datetime | None:
    """A timestamp in UTC when the database gave none (SQLite, MariaDB store UTC)."""
    return stamp if stamp is None or stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _buffer_in_redis(
    buffer: GenerationBuffer, organization_id: int, generation_id: int, scenario_id: int | None
) -> bool | None:
    """Whether a buffer of the generation is still in Redis; None when Redis cannot be
    reached (the artifact is read from the database all the same)."""
    try:
        present = buffer.keyspace.generation_keys(organization_id, generation_id, scenario_id)
        if scenario_id is not None:
            present += buffer.keyspace.generation_keys(organization_id, generation_id, None)
    except RedisUnavailable:
        return None
    return bool(present)
