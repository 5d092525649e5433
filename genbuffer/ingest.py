"""genbuf push: a byte stream into a buffer, one chunk a line, newlines kept."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from pydantic import BaseModel

from genbuffer.buffer import GenerationBuffer

__all__ = ["PushSummary", "push_lines"]


class PushSummary(BaseModel):
    """What `genbuf push --json` prints."""

    ok: bool = True

    organization_id: int
    generation_id: int
    scenario_id: int | None
    key: str
    chunks: int
    bytes: int
    length: int
    finished: bool


def push_lines(
    buffer: GenerationBuffer,
    organization_id: int,
    generation_id: int,
    stream: BinaryIO | Iterable[bytes],
    *,
    scenario_id: int | None = None,
    finish: bool = False,
) -> PushSummary:
    """Push every line of ``stream`` as a chunk, a batch per round trip.

    Lines keep their newline (a last line without one stays as it is), so the
    compacted artifact reproduces the input byte for byte. The buffer batches
    and pipelines them.
    """
    result = buffer.push_many(organization_id, generation_id, stream, scenario_id)
    key, length, chunks = result.key, result.length, result.appended + result.skipped
    bytes_total = result.bytes or 0  # counted by both paths when no sequence number is used
    if finish:
        buffer.finish(organization_id, generation_id, scenario_id)
    return PushSummary(
        organization_id=organization_id,
        generation_id=generation_id,
        scenario_id=scenario_id,
        key=key,
        chunks=chunks,
        bytes=bytes_total,
        length=length,
        finished=finish,
    )
