"""inspect-generation: the buffer keys of a generation, and optionally their removal."""

from __future__ import annotations

from pydantic import BaseModel

from genbuffer.buffer import GenerationBuffer

__all__ = ["InspectionResult", "KeyReport", "inspect_generation"]


class KeyReport(BaseModel):
    """One key: type, length (LLEN or HLEN), TTL in seconds (-1 none), memory in bytes."""

    key: str
    type: str
    length: int
    ttl: int
    memory_bytes: int | None


class InspectionResult(BaseModel):
    """What `inspect-generation --json` prints."""

    organization_id: int
    generation_id: int
    scenario_id: int | None
    keys: list[KeyReport]
    deleted: int


def inspect_generation(
    buffer: GenerationBuffer,
    organization_id: int,
    generation_id: int,
    scenario_id: int | None = None,
    delete: bool = False,
) -> InspectionResult:
    """Describe a generation's keys; with ``delete``, remove exactly those keys."""
    names = buffer.generation_keys(organization_id, generation_id, scenario_id)
    reports = [KeyReport(**vars(info)) for info in buffer.describe(names)]
    deleted = buffer.delete(names) if delete else 0
    return InspectionResult(
        organization_id=organization_id,
        generation_id=generation_id,
        scenario_id=scenario_id,
        keys=reports,
        deleted=deleted,
    )
