"""genbuffer: buffer LLM generation chunks in Redis, compact them safely into a database.

The public API::

    buffer = GenerationBuffer.from_settings(load_settings())
    buffer.push_chunk(org, generation, chunk)             # producer
    assemble_and_persist(CompactionRequest(org, generation, delete=True),
                         buffer=buffer, repository=Repository.from_settings(settings),
                         config=CompactionConfig.from_settings(settings))
"""

from __future__ import annotations

__version__ = "0.1.0"

from genbuffer.buffer import GenerationBuffer, PushResult
from genbuffer.compaction import (
    CompactionConfig,
    CompactionRequest,
    CompactionResult,
    assemble_and_persist,
)
from genbuffer.db.repository import Repository
from genbuffer.errors import GenbufferError
from genbuffer.settings import Settings, load_settings
from genbuffer.validator import Issue, Validation, validate

__all__ = [
    "CompactionConfig",
    "CompactionRequest",
    "CompactionResult",
    "GenbufferError",
    "GenerationBuffer",
    "Issue",
    "PushResult",
    "Repository",
    "Settings",
    "Validation",
    "__version__",
    "assemble_and_persist",
    "load_settings",
    "validate",
]
